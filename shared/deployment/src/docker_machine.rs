//! docker-machine command lines, built once: the arguments of each call the worker
//! makes and the fixed parts of its environment. The worker runs them; a plan
//! (`lc deploy create --dry-run`) shows them. Pure: nothing here runs anything.

use std::path::Path;

use super::{Provider, Spec};

/// The variable naming a call's store (a scratch directory made for each step).
pub const STORAGE_PATH_VAR: &str = "MACHINE_STORAGE_PATH";

/// docker-machine sends a crash report to bugsnag after a failed create unless this is
/// [`NO_CRASH_REPORT`]; every call sets it.
pub const CRASH_REPORT_VAR: &str = "MACHINE_BUGSNAG_API_TOKEN";
pub const NO_CRASH_REPORT: &str = "no-report";

/// The global flags, before every subcommand, that make docker-machine use the
/// deployment's certificates in the store at `store` instead of generating its own
/// (which parallel creates would race on).
pub fn tls_flags(store: &Path) -> Vec<String> {
    let path = |file: &str| store.join("certs").join(file).display().to_string();
    vec![
        "--tls-ca-cert".into(),
        path("ca.pem"),
        "--tls-ca-key".into(),
        path("ca-key.pem"),
        "--tls-client-cert".into(),
        path("cert.pem"),
        "--tls-client-key".into(),
        path("key.pem"),
    ]
}

/// `create --driver DRIVER [flags] NAME`; the flags as [`Spec::driver_args`] gives them.
pub fn create_args(name: &str, driver: &str, flags: &[String]) -> Vec<String> {
    let mut args = vec![
        "create".to_owned(),
        "--driver".to_owned(),
        driver.to_owned(),
    ];
    args.extend(flags.iter().cloned());
    args.push(name.to_owned());
    args
}

/// The create of machine `name` for a spec: `None` for a provider without
/// docker-machine.
pub fn spec_create_args(spec: &Spec, name: &str) -> Option<Vec<String>> {
    match &spec.provider {
        Provider::Local {} => None,
        Provider::DockerMachine { driver, .. } => {
            Some(create_args(name, driver, &spec.driver_args()))
        }
    }
}

/// `status NAME`, `inspect NAME`, `url NAME`.
pub fn query_args(op: &str, name: &str) -> Vec<String> {
    vec![op.to_owned(), name.to_owned()]
}

/// `rm -y NAME`.
pub fn rm_args(name: &str) -> Vec<String> {
    vec!["rm".to_owned(), "-y".to_owned(), name.to_owned()]
}

/// The key that bounds how many calls of one provider account run at once across the
/// cluster: `machine:<driver>:<first credentials variable>` (the account is known by
/// the variable holding its token; empty after the last `:` when the driver takes
/// none). `None` for a provider without docker-machine.
pub fn concurrency_key(provider: &Provider) -> Option<String> {
    match provider {
        Provider::Local {} => None,
        Provider::DockerMachine {
            driver,
            credentials_env,
            ..
        } => Some(format!(
            "machine:{driver}:{}",
            credentials_env.first().map(String::as_str).unwrap_or("")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(provider: &str) -> Spec {
        Spec::parse(
            &format!(
                "name: cloud\nowner: ops\nnodes: 2\nprovider: {provider}\npayload: {{image: lc-busybox:latest}}\n"
            ),
            false,
        )
        .expect("valid spec")
    }

    #[test]
    fn arguments_as_docker_machine_takes_them() {
        let cloud = spec(
            "{kind: docker-machine, driver: digitalocean, driver_flags: {digitalocean-region: fra1, digitalocean-tags: [a, b]}, credentials_env: [DO_TOKEN, OTHER]}",
        );
        assert_eq!(
            spec_create_args(&cloud, "cloud-1").expect("a docker-machine provider"),
            [
                "create",
                "--driver",
                "digitalocean",
                "--digitalocean-region=fra1",
                "--digitalocean-tags=a",
                "--digitalocean-tags=b",
                "cloud-1"
            ]
        );
        assert_eq!(
            concurrency_key(&cloud.provider).as_deref(),
            Some("machine:digitalocean:DO_TOKEN")
        );
        assert_eq!(rm_args("cloud-1"), ["rm", "-y", "cloud-1"]);
        assert_eq!(query_args("url", "cloud-1"), ["url", "cloud-1"]);
        assert_eq!(
            tls_flags(Path::new("/s"))[..2],
            ["--tls-ca-cert".to_owned(), "/s/certs/ca.pem".to_owned()]
        );
        let none = spec(
            "{kind: docker-machine, driver: none, driver_flags: {url: 'tcp://127.0.0.1:2376'}}",
        );
        assert_eq!(
            concurrency_key(&none.provider).as_deref(),
            Some("machine:none:")
        );
        let local = spec("{kind: local}");
        assert_eq!(spec_create_args(&local, "cloud-1"), None);
        assert_eq!(concurrency_key(&local.provider), None);
    }
}
