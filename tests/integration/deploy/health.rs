//! Health and repair: a deployed deployment is checked every `health_interval` by a
//! chain of `health_check` jobs; a killed container is started again and a removed
//! one created again (`repair: restart`, the default); a machine gone at the provider
//! (its droplet deleted from the stand-in's cloud) is re-created under `reprovision`
//! and only reported under `report`; more unhealthy nodes than `max_unhealthy` make the
//! deployment `degraded` and nothing is touched; a worker SIGKILLed while checks run
//! does not end the chain; bad health settings are refused before anything is written.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::expiry::table_counts;
use super::{
    Containers, calls, containers_of, create, create_calls, docker_host, docker_ps, lc_with,
    local_spec, machine_spec, store_dir, unique, wait_state, write_spec,
};
use lc_tests::{TestEnv, wait_for};

/// A spec with health settings (`extra`: YAML lines) over a base spec.
fn with_health(base: String, extra: &str) -> String {
    format!("{base}{extra}\n")
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// (docker id, state) of a container by name, if it exists.
fn container(deployment: &str, name: &str) -> Option<(String, String)> {
    docker_ps(&format!("lc.deployment.name={deployment}"))
        .into_iter()
        .find(|(_, found, _)| found == name)
        .map(|(id, _, state)| (id, state))
}

/// Waits until the deployment's last check was recorded after `since`.
async fn wait_checked_after(env: &TestEnv, id: Uuid, since: chrono::DateTime<chrono::Utc>) {
    wait_for(
        "a health check to be recorded",
        Duration::from_secs(60),
        || async {
            let row = super::deployment(env, id).await;
            row.health_checked_at.filter(|at| *at > since).map(|_| ())
        },
    )
    .await;
}

async fn database_now(env: &TestEnv) -> chrono::DateTime<chrono::Utc> {
    env.sql()
        .await
        .query_one("SELECT now()", &[])
        .await
        .unwrap()
        .get(0)
}

/// The deployment's jobs of a kind: (id, state, payload, idempotency key), oldest first.
async fn jobs_of(
    env: &TestEnv,
    id: Uuid,
    kind: &str,
) -> Vec<(Uuid, String, Value, Option<String>)> {
    env.sql()
        .await
        .query(
            "SELECT id, state, payload, idempotency_key FROM jobs WHERE group_id = $1 AND kind = $2 ORDER BY created_at",
            &[&id, &kind],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// (to_state, message) of the deployment's events about `subject`, oldest first.
async fn events_of(env: &TestEnv, id: Uuid, subject: &str) -> Vec<(Option<String>, String)> {
    env.deployment_store()
        .deployment_events(id, 2000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.subject == subject)
        .map(|event| (event.to_state, event.message.unwrap_or_default()))
        .collect()
}

/// Deployed with one check recorded and every node healthy.
async fn deployed_and_healthy(env: &TestEnv, id: Uuid) {
    wait_state(env, id, "deployed", Duration::from_secs(90)).await;
    wait_for(
        "every machine to be checked healthy",
        Duration::from_secs(60),
        || async {
            let machines = env.deployment_store().machines(id).await.unwrap();
            let containers = env.deployment_store().containers(id).await.unwrap();
            (machines.iter().all(|m| m.health.as_str() == "healthy")
                && containers.iter().all(|c| c.health.as_str() == "healthy"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn health_a_killed_container_is_restarted_within_an_interval() {
    let env = TestEnv::new().await;
    let name = unique(&env, "kill");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let id = create(
        &env,
        &with_health(local_spec(&name, 2), "health_interval: 1s"),
        &[],
    )
    .await;
    deployed_and_healthy(&env, id).await;
    let victim = format!("lc-{name}-1-g1");
    let (docker_id, state) = container(&name, &victim).expect("the container runs");
    assert_eq!(state, "running");

    docker(&["kill", &victim]);
    let killed = Instant::now();
    assert_eq!(container(&name, &victim).unwrap().1, "exited");
    let back = wait_for(
        "the killed container to run again",
        Duration::from_secs(30),
        || async { container(&name, &victim).filter(|(_, state)| state == "running") },
    )
    .await;
    let took = killed.elapsed();
    // Restarted, not replaced: the same container.
    assert_eq!(
        back.0, docker_id,
        "the container was replaced, not restarted"
    );
    // One interval (1 s) until the next check, then the check and the repair's deploy.
    assert!(took < Duration::from_secs(6), "back after {took:?}");
    println!("killed container running again after {took:?}");

    // The repair was a deploy of the current generation asked for by a check.
    let deploys = jobs_of(&env, id, "deploy").await;
    let repair = deploys
        .iter()
        .find(|(_, _, _, key)| key.as_deref().is_some_and(|key| key.contains(":repair:")))
        .unwrap_or_else(|| panic!("no repair deploy: {deploys:?}"));
    assert_eq!(repair.2["generation"], 1);
    // What was found is recorded, and is an event: unhealthy, then healthy again.
    let row = wait_state(&env, id, "deployed", Duration::from_secs(30)).await;
    assert!(row.health_checked_at.is_some());
    wait_for(
        "the container to be healthy again",
        Duration::from_secs(30),
        || async {
            let events = events_of(&env, id, &format!("container_health {victim}")).await;
            let states: Vec<_> = events.iter().filter_map(|(to, _)| to.clone()).collect();
            (states.ends_with(&["unhealthy".to_owned(), "healthy".to_owned()])).then_some(())
        },
    )
    .await;
    let events = events_of(&env, id, &format!("container_health {victim}")).await;
    assert!(
        events
            .iter()
            .any(|(to, message)| to.as_deref() == Some("unhealthy") && message.contains("exited")),
        "{events:?}"
    );
    // The deployment went deploying (the repair) and back to deployed.
    let path = super::deployment_path(&env, id).await;
    assert!(
        path.ends_with(&["deploying".to_owned(), "deployed".to_owned()]),
        "{path:?}"
    );

    // `lc deploy show` shows health and the last check, in text and JSON.
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name], &[], &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("last check") && out.contains("HEALTH"),
        "{out}"
    );
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name, "--json"], &[], &[]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(
        shown["deployment"]["health_checked_at"].is_string(),
        "{shown}"
    );
    assert_eq!(shown["deployment"]["repair"], "restart");
    assert_eq!(shown["deployment"]["health_interval_ms"], 1000);
    assert!(shown["machines"][0]["health"].is_string(), "{shown}");
    assert!(
        shown["containers"][0]["health_reason"].is_string(),
        "{shown}"
    );
    // The periodic checks never pile up: at most one link of the chain waits or runs.
    let checks = jobs_of(&env, id, "health_check").await;
    let live = checks
        .iter()
        .filter(|(_, state, _, _)| state == "queued" || state == "running")
        .count();
    assert!(live <= 1, "{checks:?}");
    worker.stop().await;
}

#[tokio::test]
async fn health_a_removed_container_is_recreated() {
    let env = TestEnv::new().await;
    let name = unique(&env, "rmf");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let id = create(
        &env,
        &with_health(local_spec(&name, 2), "health_interval: 1s"),
        &[],
    )
    .await;
    deployed_and_healthy(&env, id).await;
    let victim = format!("lc-{name}-2-g1");
    let (docker_id, _) = container(&name, &victim).expect("the container runs");

    docker(&["rm", "-f", &victim]);
    assert!(container(&name, &victim).is_none());
    let back = wait_for(
        "the removed container to be created again",
        Duration::from_secs(30),
        || async { container(&name, &victim).filter(|(_, state)| state == "running") },
    )
    .await;
    assert_ne!(back.0, docker_id, "a new container");
    assert_eq!(containers_of(id).len(), 2, "{:?}", containers_of(id));
    let events = events_of(&env, id, &format!("container_health {victim}")).await;
    assert!(
        events
            .iter()
            .any(|(to, message)| to.as_deref() == Some("unhealthy") && message.contains("missing")),
        "{events:?}"
    );
    wait_state(&env, id, "deployed", Duration::from_secs(30)).await;
    worker.stop().await;
}

/// A two-node deployment on the stand-in's simulated DigitalOcean account with `repair`.
async fn cloud_deployment(env: &TestEnv, name: &str, repair: &str, token: &str) -> Uuid {
    let spec = machine_spec(name, 2, 3).replace(
        &format!("driver: none, driver_flags: {{url: '{}'}}", docker_host()),
        "driver: digitalocean, driver_flags: {digitalocean-region: fra1}, credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]",
    );
    let spec = with_health(spec, &format!("health_interval: 1s\nrepair: {repair}"));
    create(env, &spec, &[("DIGITALOCEAN_ACCESS_TOKEN", token)]).await
}

/// The droplet of a machine: deleted at the "provider". The stand-in's droplets all
/// use the one test engine, so the machine's container is removed with it (a deleted
/// droplet takes its containers along; here they would stay on the shared engine).
fn delete_droplet(env: &TestEnv, deployment: &str, machine: &str) -> i64 {
    let cloud = env.standin_dir().join("cloud");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(cloud.join(format!("{machine}.json"))).unwrap(),
    )
    .unwrap();
    for suffix in [".json", ".server.pem", ".server-key.pem", ".ca.pem"] {
        let _ = std::fs::remove_file(cloud.join(format!("{machine}{suffix}")));
    }
    for (id, name, _) in docker_ps(&format!("lc.deployment.name={deployment}")) {
        if name.starts_with(&format!("lc-{machine}-")) {
            docker(&["rm", "-f", &id]);
        }
    }
    record["id"].as_i64().unwrap()
}

fn droplet_id(env: &TestEnv, machine: &str) -> Option<i64> {
    let text =
        std::fs::read_to_string(env.standin_dir().join(format!("cloud/{machine}.json"))).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["id"].as_i64()
}

#[tokio::test]
async fn health_a_machine_gone_at_the_provider_is_reprovisioned_under_reprovision() {
    let env = TestEnv::new().await;
    let name = unique(&env, "reprov");
    let _guard = Containers(vec![name.clone()]);
    let token = format!("dop_v1_{}", Uuid::new_v4().simple());
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let mut worker = env.spawn_worker_process_with_env(
        &["--machine-env", &engine],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    let id = cloud_deployment(&env, &name, "reprovision", &token).await;
    deployed_and_healthy(&env, id).await;
    let machine = format!("{name}-2");
    let store = store_dir(&env, id);
    assert_eq!(create_calls(&store, &machine), 1);
    let old = delete_droplet(&env, &name, &machine);

    // Removed (what docker-machine still had of it) and created again, then deployed.
    let new = wait_for(
        "a new droplet for the machine",
        Duration::from_secs(60),
        || async { droplet_id(&env, &machine).filter(|new| *new != old) },
    )
    .await;
    assert_ne!(new, old);
    let victim = format!("lc-{machine}-g1");
    wait_for(
        "the machine's container to run again",
        Duration::from_secs(60),
        || async { container(&name, &victim).filter(|(_, state)| state == "running") },
    )
    .await;
    wait_state(&env, id, "deployed", Duration::from_secs(30)).await;
    assert_eq!(
        create_calls(&store, &machine),
        2,
        "one more create, of the gone machine only"
    );
    assert_eq!(
        create_calls(&store, &format!("{name}-1")),
        1,
        "the healthy machine is untouched"
    );
    assert!(
        calls(&store)
            .iter()
            .any(|(op, last, _, _)| op == "rm" && *last == machine),
        "the gone machine was not removed before it was created again"
    );
    let repairs: Vec<_> = jobs_of(&env, id, "provision_machine")
        .await
        .into_iter()
        .filter(|(_, _, payload, _)| payload.get("repair").is_some())
        .collect();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert_eq!(repairs[0].2["node"], 2);
    assert_eq!(repairs[0].1, "succeeded");
    let events = events_of(&env, id, &format!("machine_health {machine}")).await;
    assert!(
        events
            .iter()
            .any(|(to, message)| to.as_deref() == Some("unhealthy")
                && message.contains("machine missing")),
        "{events:?}"
    );
    let machine_events = events_of(&env, id, &format!("machine {machine}")).await;
    let states: Vec<_> = machine_events
        .iter()
        .filter_map(|(to, _)| to.clone())
        .collect();
    assert!(
        states.ends_with(&["creating".to_owned(), "ready".to_owned()]),
        "{states:?}"
    );
    // The re-created machine is the deployment's like the others: the teardown removes it.
    super::teardown_and_check_empty(&env, id, &name).await;
    assert!(
        droplet_id(&env, &machine).is_none(),
        "the new droplet was left billing"
    );
    worker.signal(libc::SIGTERM);
    worker.wait(Duration::from_secs(20));
}

#[tokio::test]
async fn health_a_machine_gone_at_the_provider_is_only_reported_under_report() {
    let env = TestEnv::new().await;
    let name = unique(&env, "report");
    let _guard = Containers(vec![name.clone()]);
    let token = format!("dop_v1_{}", Uuid::new_v4().simple());
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let mut worker = env.spawn_worker_process_with_env(
        &["--machine-env", &engine],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    let id = cloud_deployment(&env, &name, "report", &token).await;
    deployed_and_healthy(&env, id).await;
    let machine = format!("{name}-2");
    let store = store_dir(&env, id);
    delete_droplet(&env, &name, &machine);

    wait_for(
        "the machine to be recorded missing",
        Duration::from_secs(60),
        || async {
            let machines = env.deployment_store().machines(id).await.unwrap();
            machines
                .into_iter()
                .find(|m| m.name == machine)
                .filter(|m| {
                    m.health.as_str() == "unhealthy"
                        && m.health_reason
                            .as_deref()
                            .is_some_and(|r| r.contains("machine missing"))
                })
        },
    )
    .await;
    // Three more checks: still nothing repaired.
    for _ in 0..3 {
        let now = database_now(&env).await;
        wait_checked_after(&env, id, now).await;
    }
    assert!(
        droplet_id(&env, &machine).is_none(),
        "a droplet was made again"
    );
    assert_eq!(
        create_calls(&store, &machine),
        1,
        "the machine was created again"
    );
    assert!(
        container(&name, &format!("lc-{machine}-g1")).is_none(),
        "its container came back"
    );
    assert!(
        jobs_of(&env, id, "provision_machine")
            .await
            .iter()
            .all(|(_, _, p, _)| p.get("repair").is_none()),
        "a repair job was enqueued"
    );
    assert!(
        jobs_of(&env, id, "deploy")
            .await
            .iter()
            .all(|(_, _, _, k)| !k.as_deref().unwrap_or("").contains(":repair:")),
        "a repair deploy was enqueued"
    );
    let row = super::deployment(&env, id).await;
    assert_eq!(row.state, "deployed");
    assert!(
        row.health_reason
            .as_deref()
            .is_some_and(|r| r.contains("recorded only")),
        "{:?}",
        row.health_reason
    );
    worker.signal(libc::SIGTERM);
    worker.wait(Duration::from_secs(20));
}

#[tokio::test]
async fn health_three_of_three_failing_with_max_unhealthy_one_is_degraded_and_untouched() {
    let env = TestEnv::new().await;
    let name = unique(&env, "degr");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let spec = with_health(
        local_spec(&name, 3),
        "health_interval: 1s\nmax_unhealthy: 1",
    );
    let id = create(&env, &spec, &[]).await;
    deployed_and_healthy(&env, id).await;
    let names: Vec<String> = (1..=3).map(|node| format!("lc-{name}-{node}-g1")).collect();
    for victim in &names {
        docker(&["kill", victim]);
    }
    let row = wait_state(&env, id, "degraded", Duration::from_secs(30)).await;
    assert!(
        row.health_reason
            .as_deref()
            .is_some_and(|r| r.contains("3 of 3") && r.contains("nothing repaired")),
        "{:?}",
        row.health_reason
    );
    // More checks come and go: nothing is touched while degraded.
    for _ in 0..3 {
        let now = database_now(&env).await;
        wait_checked_after(&env, id, now).await;
    }
    for victim in &names {
        assert_eq!(
            container(&name, victim).unwrap().1,
            "exited",
            "{victim} was touched"
        );
    }
    assert!(
        jobs_of(&env, id, "deploy")
            .await
            .iter()
            .all(|(_, _, _, k)| !k.as_deref().unwrap_or("").contains(":repair:")),
        "a repair was enqueued while degraded"
    );
    assert_eq!(super::deployment(&env, id).await.state, "degraded");
    // `lc stuck` lists it with what to do.
    let (code, out, _) = lc_with(&env, &["stuck", "--json"], &[], &[]).await;
    assert_eq!(code, 3, "{out}");
    let findings: Value = serde_json::from_str(&out).unwrap();
    let finding = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|finding| finding["queue"] == name.as_str())
        .unwrap_or_else(|| panic!("{findings}"));
    assert_eq!(finding["state"], "degraded");
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("lc deploy check {name}")),
        "{finding}"
    );
    // Fixed by hand (two of three), then a check on request repairs the third (within
    // max_unhealthy again) and the deployment is deployed again.
    docker(&["start", &names[0]]);
    docker(&["start", &names[1]]);
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "check", &name, "--wait", "--json"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    let checked: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(checked["ran"], true, "{checked}");
    wait_for(
        "the third container to run again",
        Duration::from_secs(30),
        || async { container(&name, &names[2]).filter(|(_, state)| state == "running") },
    )
    .await;
    wait_state(&env, id, "deployed", Duration::from_secs(30)).await;
    let path = super::deployment_path(&env, id).await;
    assert!(path.contains(&"degraded".to_owned()), "{path:?}");
    worker.stop().await;
}

#[tokio::test]
async fn health_check_chain_survives_a_worker_killed_while_checks_run() {
    let env = TestEnv::new().await;
    let name = unique(&env, "chain");
    let _guard = Containers(vec![name.clone()]);
    let mut first = env.spawn_worker_process(&[]);
    let id = create(
        &env,
        &with_health(local_spec(&name, 2), "health_interval: 1s"),
        &[],
    )
    .await;
    deployed_and_healthy(&env, id).await;
    // SIGKILL the worker while a check runs, if one is caught running.
    let caught = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let running = jobs_of(&env, id, "health_check")
                .await
                .into_iter()
                .any(|(_, state, _, _)| state == "running");
            if running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .is_ok();
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    println!("killed while a check ran: {caught}");
    let link = |payload: &Value| payload["chain"].as_i64();
    let before = jobs_of(&env, id, "health_check")
        .await
        .iter()
        .filter_map(|(_, _, p, _)| link(p))
        .max()
        .unwrap();

    // Nothing runs the checks now; a new worker carries the chain on.
    let second = env.spawn_worker(env.worker_config());
    wait_for(
        "the chain to go on after the kill",
        Duration::from_secs(60),
        || async {
            let done = jobs_of(&env, id, "health_check")
                .await
                .into_iter()
                .filter(|(_, state, p, _)| {
                    state == "succeeded" && link(p).is_some_and(|n| n >= before + 2)
                })
                .count();
            (done > 0).then_some(())
        },
    )
    .await;
    let checks = jobs_of(&env, id, "health_check").await;
    let mut links: Vec<i64> = checks.iter().filter_map(|(_, _, p, _)| link(p)).collect();
    links.sort_unstable();
    let count = links.len();
    links.dedup();
    assert_eq!(
        links.len(),
        count,
        "a link of the chain was made twice: {checks:?}"
    );
    assert_eq!(
        links,
        (1..=count as i64).collect::<Vec<_>>(),
        "the chain has a gap"
    );
    let live = checks
        .iter()
        .filter(|(_, state, _, _)| state == "queued" || state == "running")
        .count();
    assert!(live <= 1, "checks pile up: {checks:?}");
    second.stop().await;
}

#[tokio::test]
async fn health_bad_settings_are_refused_naming_the_field_and_nothing_is_written() {
    let env = TestEnv::new().await;
    let name = unique(&env, "bad");
    let before = table_counts(&env).await;
    let cases = [
        ("repair: rebuild", "repair"),
        ("health_interval: 0s", "health_interval"),
        ("health_interval: '-5s'", "health_interval"),
        ("health_interval: soon", "health_interval"),
        ("max_unhealthy: '150%'", "max_unhealthy"),
        ("max_unhealthy: -1", "max_unhealthy"),
        ("max_unhealthy: many", "max_unhealthy"),
    ];
    for (line, field) in cases {
        let path = write_spec(&env, &with_health(local_spec(&name, 2), line));
        let (code, out, err) = lc_with(
            &env,
            &["deploy", "create", path.to_str().unwrap()],
            &[],
            &[],
        )
        .await;
        assert_ne!(code, 0, "{line} was accepted: {out}");
        assert!(
            err.contains(field),
            "{line}: the error does not name {field}: {err}"
        );
        let (code, _, err) = lc_with(
            &env,
            &["deploy", "create", path.to_str().unwrap(), "--dry-run"],
            &[],
            &[],
        )
        .await;
        assert_ne!(code, 0, "{line} was accepted by --dry-run");
        assert!(err.contains(field), "{err}");
    }
    assert_eq!(table_counts(&env).await, before, "something was written");
    // The good forms are accepted.
    for line in [
        "repair: report\nmax_unhealthy: '34%'\nhealth_interval: 30s",
        "max_unhealthy: 2",
    ] {
        let path = write_spec(&env, &with_health(local_spec(&name, 3), line));
        let (code, _, err) = lc_with(
            &env,
            &["deploy", "create", path.to_str().unwrap(), "--dry-run"],
            &[],
            &[],
        )
        .await;
        assert_eq!(code, 0, "{line}: {err}");
    }
}

/// The checks reach `tcp://` engines over TLS with the deployment's certificates (the
/// engine of `scripts/services.sh`, machines registered with the none driver): a
/// container killed there is started again.
#[tokio::test]
async fn health_checks_reach_tls_engines_and_restart_a_killed_container_there() {
    let env = TestEnv::new().await;
    let name = unique(&env, "tlsh");
    let image = std::env::var("LC_REGISTRY_IMAGE")
        .expect("LC_REGISTRY_IMAGE is set by scripts/services.sh");
    let worker = env.spawn_worker(env.worker_config());
    let spec = with_health(
        super::tls_spec(&name, 2, &image, true),
        "health_interval: 1s",
    );
    let id = create(&env, &spec, &[]).await;
    deployed_and_healthy(&env, id).await;
    let victim = format!("lc-{name}-1-g1");
    let killed = super::tls_docker(&["kill", &victim]);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let started = Instant::now();
    wait_for(
        "the container on the TLS engine to run again",
        Duration::from_secs(30),
        || async {
            super::tls_containers(id)
                .contains(&format!("{victim} running"))
                .then_some(())
        },
    )
    .await;
    println!("running again after {:?}", started.elapsed());
    let events = events_of(&env, id, &format!("container_health {victim}")).await;
    assert!(
        events
            .iter()
            .any(|(to, message)| to.as_deref() == Some("unhealthy") && message.contains("exited")),
        "{events:?}"
    );
    let machines = env.deployment_store().machines(id).await.unwrap();
    assert!(machines.iter().all(|m| {
        m.engine_url
            .as_deref()
            .is_some_and(|url| url.starts_with("tcp://"))
    }));
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "90s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    assert!(
        super::tls_containers(id).is_empty(),
        "{:?}",
        super::tls_containers(id)
    );
    worker.stop().await;
}

/// A machine that cannot be created again (every create fails) makes the deployment
/// `failed`, without the rollback of a failed create: the other machine keeps running,
/// and a teardown by hand removes everything.
#[tokio::test]
async fn health_a_reprovision_that_fails_for_good_fails_the_deployment_without_a_rollback() {
    let env = TestEnv::new().await;
    let name = unique(&env, "refail");
    let _guard = Containers(vec![name.clone()]);
    let token = format!("dop_v1_{}", Uuid::new_v4().simple());
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let mut first = env.spawn_worker_process_with_env(
        &["--machine-env", &engine],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    let id = cloud_deployment(&env, &name, "reprovision", &token).await;
    deployed_and_healthy(&env, id).await;
    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(20));
    // From now on every create of node 2 fails.
    let machine = format!("{name}-2");
    let only = format!("STANDIN_FAIL_MATCH={machine}$");
    let mut second = env.spawn_worker_process_with_env(
        &[
            "--machine-env",
            &engine,
            "--machine-env",
            "STANDIN_FAIL_CREATE=always",
            "--machine-env",
            &only,
        ],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    delete_droplet(&env, &name, &machine);
    let row = wait_state(&env, id, "failed", Duration::from_secs(60)).await;
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains(&machine)),
        "{:?}",
        row.last_error
    );
    let store = store_dir(&env, id);
    assert_eq!(
        create_calls(&store, &machine),
        1 + 3,
        "one create, then the repair's three attempts"
    );
    // No rollback: the healthy machine and its container are still there.
    let machines = env.deployment_store().machines(id).await.unwrap();
    let states: Vec<(String, String)> = machines
        .iter()
        .map(|m| (m.name.clone(), m.state.to_string()))
        .collect();
    assert_eq!(
        states,
        vec![
            (format!("{name}-1"), "ready".into()),
            (machine.clone(), "failed".into())
        ]
    );
    assert_eq!(
        container(&name, &format!("lc-{name}-1-g1")).map(|(_, state)| state),
        Some("running".into())
    );
    assert!(
        jobs_of(&env, id, "teardown").await.is_empty(),
        "a rollback was started"
    );
    super::teardown_and_check_empty(&env, id, &name).await;
    assert!(
        super::cloud_droplets(&env).is_empty(),
        "{:?}",
        super::cloud_droplets(&env)
    );
    second.signal(libc::SIGTERM);
    second.wait(Duration::from_secs(20));
}
