//! The spec's parsing, merging and checks.

use super::*;

const LOCAL: &str = "
name: demo
owner: alice
nodes: 3
provider: {kind: local}
payload:
  image: lc-busybox:latest
  command: [sleep, '3600']
  network_mode: none
";

fn err(text: &str) -> String {
    Spec::parse(text, false)
        .expect_err("spec should be refused")
        .to_string()
}

#[test]
fn parses_yaml_and_json() {
    let spec = Spec::parse(LOCAL, false).expect("valid spec");
    assert_eq!(spec.node_count(), 3);
    assert_eq!(spec.provider.kind(), "local");
    assert_eq!(spec.max_attempts, DEFAULT_SPEC_ATTEMPTS);
    let json = serde_json::to_string(&spec).expect("serializes");
    let back = Spec::parse(&json, true).expect("round trip");
    assert_eq!(back, spec);
    assert_eq!(
        Spec::from_json(&spec.to_json()).expect("column round trip"),
        spec
    );
}

#[test]
fn node_overrides_merge() {
    let spec = Spec::parse(
        "
name: web
owner: bob
nodes:
  - {command: [httpd, -f, -p, '127.0.0.1:18081'], env: {A: '1'}}
  - {}
provider: {kind: local}
payload: {image: lc-busybox:latest, command: [sleep, '1'], env: {A: '0', B: '2'}, network_mode: host}
timeouts: {machine: 90s, stop: 2s}
",
        false,
    )
    .expect("valid spec");
    assert_eq!(spec.node_count(), 2);
    let first = spec.node_payload(1);
    assert_eq!(
        first.command.as_deref().map(|c| c[0].as_str()),
        Some("httpd")
    );
    assert_eq!(first.env.get("A").map(String::as_str), Some("1"));
    assert_eq!(first.env.get("B").map(String::as_str), Some("2"));
    assert_eq!(
        spec.node_payload(2)
            .command
            .as_deref()
            .map(|c| c[0].as_str()),
        Some("sleep")
    );
    assert_eq!(spec.timeouts.machine, Some(Duration::from_secs(90)));
    let back = Spec::from_json(&spec.to_json()).expect("round trip");
    assert_eq!(back, spec);
}

#[test]
fn docker_machine_provider() {
    let spec = Spec::parse(
        "
name: cloud
owner: ops
nodes: 2
provider:
  kind: docker-machine
  driver: digitalocean
  driver_flags: {digitalocean-region: fra1, digitalocean-ipv6: true, engine-label: [a=1, b=2]}
  credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]
payload: {image: lc-busybox:latest}
",
        false,
    )
    .expect("valid spec");
    assert_eq!(
        spec.driver_args(),
        vec![
            "--digitalocean-ipv6=true",
            "--digitalocean-region=fra1",
            "--engine-label=a=1",
            "--engine-label=b=2"
        ]
    );
    assert_eq!(
        spec.provider.credentials_env(),
        ["DIGITALOCEAN_ACCESS_TOKEN"]
    );
}

#[test]
fn a_provider_account_is_a_concurrency_key_with_a_limit() {
    let spec = |provider: &str| {
        Spec::parse(
            &format!(
                "name: cloud\nowner: ops\nnodes: 2\nprovider: {provider}\npayload: {{image: lc-busybox:latest}}\n"
            ),
            false,
        )
    };
    let local = spec("{kind: local}").expect("valid");
    assert_eq!(local.provider.concurrency_key(), None);
    assert_eq!(local.provider.parallel_calls(), None);
    let ocean = spec(
        "{kind: docker-machine, driver: digitalocean, credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]}",
    )
    .expect("valid");
    assert_eq!(
        ocean.provider.concurrency_key().as_deref(),
        Some("machine:digitalocean:DIGITALOCEAN_ACCESS_TOKEN")
    );
    assert_eq!(ocean.provider.parallel_calls(), Some(5));
    let aws = spec(
        "{kind: docker-machine, driver: amazonec2, credentials_env: [AWS_SECRET_ACCESS_KEY, AWS_ACCESS_KEY_ID], max_parallel_calls: 3}",
    )
    .expect("valid");
    assert_eq!(
        aws.provider.concurrency_key().as_deref(),
        Some("machine:amazonec2:AWS_ACCESS_KEY_ID+AWS_SECRET_ACCESS_KEY")
    );
    assert_eq!(aws.provider.parallel_calls(), Some(3));
    assert_eq!(Spec::from_json(&aws.to_json()).expect("round trip"), aws);
    let none = spec("{kind: docker-machine, driver: none}").expect("valid");
    assert_eq!(
        none.provider.concurrency_key().as_deref(),
        Some("machine:none")
    );
    assert_eq!(none.provider.parallel_calls(), Some(10));
    for bad in [0, -1, MAX_PARALLEL_CALLS + 1] {
        let refused = spec(&format!(
            "{{kind: docker-machine, driver: none, max_parallel_calls: {bad}}}"
        ))
        .expect_err("refused")
        .to_string();
        assert_eq!(
            refused,
            format!(
                "invalid spec: provider.max_parallel_calls: must be between 1 and {MAX_PARALLEL_CALLS}, got {bad}"
            )
        );
    }
    assert!(spec("{kind: local, max_parallel_calls: 3}").is_err());
}

#[test]
fn examples_parse() {
    for (name, text) in [
        ("demo.yaml", include_str!("../../../../examples/demo.yaml")),
        (
            "docker-machine.yaml",
            include_str!("../../../../examples/docker-machine.yaml"),
        ),
    ] {
        let spec = Spec::parse(text, false).unwrap_or_else(|err| panic!("examples/{name}: {err}"));
        assert!(spec.node_count() >= 1);
    }
}

#[test]
fn refuses_what_could_reach_a_command_line() {
    assert!(err(&LOCAL.replace("name: demo", "name: Demo")).contains("invalid deployment name"));
    assert!(err(&LOCAL.replace("name: demo", "name: 'demo; rm -rf /'")).contains("name"));
    assert!(err(&LOCAL.replace("kind: local", "kind: hetzner-cloud")).contains("unknown variant"));
    assert!(
        err(&LOCAL.replace("owner: alice", "owner: alice\ncolour: red")).contains("unknown field")
    );
    assert!(err(&LOCAL.replace("nodes: 3", "nodes: 0")).contains("nodes"));
    assert!(err(&LOCAL.replace("nodes: 3", "nodes: 1001")).contains("nodes"));
    assert!(
        err(&LOCAL.replace("network_mode: none", "network_mode: bridge"))
            .contains("unknown variant")
    );
    assert!(
        err(&LOCAL.replace("image: lc-busybox:latest", "image: '--privileged'"))
            .contains("payload.image")
    );
    let machine = |provider: &str| LOCAL.replace("provider: {kind: local}", provider);
    assert!(
        err(&machine(
            "provider: {kind: docker-machine, driver: 'digital ocean'}"
        ))
        .contains("provider.driver")
    );
    assert!(
        err(&machine(
            "provider: {kind: docker-machine, driver: none, driver_flags: {'--url': x}}"
        ))
        .contains("driver_flags")
    );
    assert!(
        err(&machine(
            "provider: {kind: docker-machine, driver: none, driver_flags: {url: \"a\\nb\"}}"
        ))
        .contains("newline")
    );
    assert!(
        err(&machine(
            "provider: {kind: docker-machine, driver: none, driver_flags: {storage-path: /tmp}}"
        ))
        .contains("set by LaunchControl")
    );
    assert!(err(&machine("provider: {kind: docker-machine, driver: digitalocean, driver_flags: {digitalocean-access-token: abc}}")).contains("credential"));
    assert!(
        err(&machine(
            "provider: {kind: docker-machine, driver: digitalocean, credentials_env: [do_token]}"
        ))
        .contains("credentials_env")
    );
    assert!(err(&machine("provider: {kind: local, driver: x}")).contains("unknown field"));
    assert!(
        err(&LOCAL.replace(
            "network_mode: none",
            "network_mode: none\n  files: [{path: ../etc/passwd, content: x}]"
        ))
        .contains("path")
    );
    assert!(
        err(&LOCAL.replace(
            "network_mode: none",
            "network_mode: none\n  labels: {lc.job: x}"
        ))
        .contains("reserved")
    );
}

#[test]
fn expiry_is_a_ttl_or_a_moment_never_both() {
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("a time")
            .with_timezone(&chrono::Utc)
    };
    let spec = Spec::parse(LOCAL, false).expect("valid spec");
    assert_eq!(spec.expiry(), Ok(None));
    let spec = Spec::parse(&format!("{LOCAL}ttl: 1h 30m\n"), false).expect("valid spec");
    assert_eq!(
        spec.expiry(),
        Ok(Some(Expiry::After(Duration::from_secs(5400))))
    );
    let now = at("2030-01-01T00:00:00Z");
    assert_eq!(
        spec.expiry()
            .expect("valid")
            .expect("an expiry")
            .deadline(now),
        Ok(at("2030-01-01T01:30:00Z"))
    );
    // Round trip as written, through the column.
    assert_eq!(Spec::from_json(&spec.to_json()).expect("round trip"), spec);
    let spec = Spec::parse(
        &format!("{LOCAL}expires_at: 2030-01-31T18:00:00+01:00\n"),
        false,
    )
    .expect("valid spec");
    let moment = spec.expiry().expect("valid").expect("an expiry");
    assert_eq!(moment, Expiry::At(at("2030-01-31T17:00:00Z")));
    assert_eq!(moment.deadline(now), Ok(at("2030-01-31T17:00:00Z")));
    // A moment in the past is refused when the deployment is made, not when its stored
    // spec is read again later.
    let late = at("2030-02-01T00:00:00Z");
    let refused = moment.deadline(late).expect_err("in the past").to_string();
    assert!(
        refused.contains("expires_at") && refused.contains("past"),
        "{refused}"
    );

    for (extra, words) in [
        ("ttl: 0s", &["ttl", "more than 0s"][..]),
        ("ttl: soon", &["ttl", "invalid duration \"soon\""][..]),
        ("ttl: 3651d", &["ttl", "at most"][..]),
        ("expires_at: tomorrow", &["expires_at", "RFC 3339"][..]),
        (
            "ttl: 1h\nexpires_at: 2030-01-31T18:00:00Z",
            &["ttl", "expires_at", "one of them"][..],
        ),
    ] {
        let text = err(&format!("{LOCAL}{extra}\n"));
        for word in words {
            assert!(text.contains(word), "{extra}: {text}");
        }
    }
}

#[test]
fn a_ttl_given_apart_replaces_the_specs_own_but_not_a_moment() {
    let mut spec = Spec::parse(&format!("{LOCAL}ttl: 1h\n"), false).expect("valid spec");
    spec.set_ttl("24h").expect("a ttl");
    assert_eq!(spec.ttl.as_deref(), Some("24h"));
    let text = spec.set_ttl("0s").expect_err("zero").to_string();
    assert!(text.contains("ttl"), "{text}");
    let mut spec = Spec::parse(&format!("{LOCAL}expires_at: 2030-01-31T18:00:00Z\n"), false)
        .expect("valid spec");
    let text = spec.set_ttl("1h").expect_err("both").to_string();
    assert!(
        text.contains("ttl") && text.contains("expires_at"),
        "{text}"
    );
}
