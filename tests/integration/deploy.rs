//! Deployments end to end: provision (fan-out, join, rollback, watchdog), deploy
//! (bollard against the real Docker engine), teardown, with the docker-machine stand-in
//! (`tests/docker-machine/`) for the `docker-machine` provider and the real engine for
//! the `local` one. Every test checks the end state: machines in the stand-in's store,
//! containers on the engine (by label), rows in the database.
//!
//! Deployment names carry the test's tag, so tests running at once on the one engine
//! never share container names; a guard removes whatever containers a test leaves.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lc_deployment::DeploymentRow;
use lc_tests::TestWorkerConfig;
use lc_tests::{InProcessWorker, TestEnv, bin, wait_for};
use serde_json::Value;
use uuid::Uuid;

mod expiry;
mod health;
mod plan;

pub(crate) fn image() -> String {
    std::env::var("LC_IMAGE").unwrap_or_else(|_| "lc-busybox:latest".to_owned())
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .expect("DOCKER_HOST must name the test engine (. .lc/env, or scripts/test.sh)")
}

/// A deployment name unique to this test.
pub(crate) fn unique(env: &TestEnv, base: &str) -> String {
    format!("{base}-{}", &env.prefix[1..9])
}

/// Removes the containers of the named deployments when the test ends, however it ends.
pub(crate) struct Containers(pub(crate) Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            for id in docker_ps(&format!("lc.deployment.name={name}")) {
                let _ = Command::new("docker")
                    .args(["rm", "-f", &id.0])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `docker ps -a` filtered by a label: (id, name, state).
fn docker_ps(label: &str) -> Vec<(String, String, String)> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.ID}} {{.Names}} {{.State}}",
        ])
        .output()
        .expect("docker CLI");
    assert!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
            ))
        })
        .collect()
}

pub(crate) fn containers_of(id: Uuid) -> Vec<(String, String, String)> {
    docker_ps(&format!("lc.deployment={id}"))
}

fn local_spec(name: &str, nodes: usize) -> String {
    format!(
        "name: {name}\nowner: tests\nnodes: {nodes}\nprovider: {{kind: local}}\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         timeouts: {{stop: 1s}}\n",
        image()
    )
}

/// docker-machine with the `none` driver: each machine registers the test engine.
pub(crate) fn machine_spec(name: &str, nodes: usize, max_attempts: i64) -> String {
    format!(
        "name: {name}\nowner: tests\nnodes: {nodes}\n\
         provider: {{kind: docker-machine, driver: none, driver_flags: {{url: '{}'}}}}\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         max_attempts: {max_attempts}\ntimeouts: {{stop: 1s}}\n",
        docker_host(),
        image()
    )
}

fn write_spec(env: &TestEnv, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "lc-spec-{}-{}.yaml",
        env.prefix,
        Uuid::new_v4().simple()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `lc` with this env's settings plus `extra` variables and without `remove`
/// (without blocking the test's runtime, where in-process workers run).
async fn lc_with(
    env: &TestEnv,
    args: &[&str],
    extra: &[(&str, &str)],
    remove: &[&str],
) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(bin("lc"));
    command
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .args(args);
    for (name, value) in extra {
        command.env(name, value);
    }
    for name in remove {
        command.env_remove(name);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `lc deploy create SPEC --json`; returns the deployment id.
pub(crate) async fn create(env: &TestEnv, spec: &str, extra: &[(&str, &str)]) -> Uuid {
    let path = write_spec(env, spec);
    let (code, out, err) = lc_with(
        env,
        &["deploy", "create", path.to_str().unwrap(), "--json"],
        extra,
        &[],
    )
    .await;
    assert_eq!(code, 0, "lc deploy create failed: {err}");
    let value: Value = serde_json::from_str(&out).unwrap();
    value["id"].as_str().unwrap().parse().unwrap()
}

/// The states a deployment went through, in order.
async fn deployment_path(env: &TestEnv, id: Uuid) -> Vec<String> {
    env.deployment_store()
        .deployment_events(id, 200)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.subject == "deployment")
        .filter_map(|event| event.to_state)
        .collect()
}

/// `lc deploy update SPEC --wait`: (exit code, stderr).
async fn update_and_wait(env: &TestEnv, spec: &str) -> (i32, String) {
    let path = write_spec(env, spec);
    let (code, _, err) = lc_with(
        env,
        &[
            "deploy",
            "update",
            path.to_str().unwrap(),
            "--wait",
            "--timeout",
            "90s",
        ],
        &[],
        &[],
    )
    .await;
    (code, err)
}

pub(crate) fn config_with(env: &TestEnv, machine_env: &[&str]) -> TestWorkerConfig {
    let mut config = env.worker_config();
    config
        .machines
        .machine_env
        .extend(machine_env.iter().map(|entry| (*entry).to_owned()));
    config
}

pub(crate) async fn deployment(env: &TestEnv, id: Uuid) -> DeploymentRow {
    env.deployment_store()
        .deployment(id)
        .await
        .unwrap()
        .expect("deployment exists")
}

/// Waits until the deployment is in `state`; fails at once if it lands in a state it
/// cannot leave for that one.
pub(crate) async fn wait_state(
    env: &TestEnv,
    id: Uuid,
    state: &str,
    timeout: Duration,
) -> DeploymentRow {
    wait_for(&format!("deployment to be {state}"), timeout, || async {
        let row = deployment(env, id).await;
        if row.state != state && row.state == "torn_down" {
            panic!(
                "deployment ended torn_down while waiting for {state}: {:?}",
                row.last_error
            );
        }
        (row.state == state).then_some(row)
    })
    .await
}

/// The stand-in's records of this test (calls, counters, hang pids, its cloud).
fn store_dir(env: &TestEnv, _id: Uuid) -> PathBuf {
    env.standin_dir()
}

/// Machines whose docker-machine state the deployment holds (a store entry in the
/// database: what any worker would materialize and docker-machine would know).
pub(crate) async fn stored_machines(env: &TestEnv, id: Uuid) -> Vec<String> {
    let client = env.store.client().await.unwrap();
    client
        .query(
            "SELECT name FROM machines WHERE deployment_id = $1 AND store_entry IS NOT NULL ORDER BY node_index",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The stand-in's calls: (subcommand, last argument, env names).
fn calls(store: &Path) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    std::fs::read_to_string(store.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|call| {
            let argv: Vec<String> = call["argv"]
                .as_array()
                .map(|argv| {
                    argv.iter()
                        .filter_map(|arg| arg.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let env_names: Vec<String> = call["env_names"]
                .as_array()
                .map(|names| {
                    names
                        .iter()
                        .filter_map(|name| name.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            // The subcommand comes after the global `--tls-*` flags and their values.
            let mut rest = argv.iter().skip(1);
            let mut op = String::new();
            while let Some(arg) = rest.next() {
                if arg.starts_with("--tls-") && !arg.contains('=') {
                    rest.next();
                } else if !arg.starts_with('-') {
                    op = arg.clone();
                    break;
                }
            }
            (
                op,
                argv.last().cloned().unwrap_or_default(),
                env_names,
                argv,
            )
        })
        .collect()
}

/// A machine's `config.json` as docker-machine left it, opened from the database with
/// the workers' key (`LC_SECRET_KEY`).
async fn machine_config(env: &TestEnv, id: Uuid, machine: &str) -> String {
    let key = lc_shared::secrets::SecretKey::from_env()
        .unwrap()
        .expect("LC_SECRET_KEY is set (scripts/services.sh writes it to .lc/env)");
    let row = env
        .sql()
        .await
        .query_one(
            "SELECT id, store_entry FROM machines WHERE deployment_id = $1 AND name = $2",
            &[&id, &machine],
        )
        .await
        .unwrap();
    let entry = lc_deployment::runtime::machine_store::MachineEntry::open(
        &key,
        row.get(0),
        &row.get::<_, Vec<u8>>(1),
    )
    .unwrap();
    let config = entry
        .files
        .get("config.json")
        .expect("config.json in the entry");
    String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, config).unwrap(),
    )
    .unwrap()
}

/// Droplets the stand-in's simulated DigitalOcean account holds (what would bill).
pub(crate) fn cloud_droplets(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.standin_dir().join("cloud"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn create_calls(store: &Path, machine: &str) -> usize {
    calls(store)
        .iter()
        .filter(|(op, last, _, _)| op == "create" && last == machine)
        .count()
}

/// Pids of the stand-in's create calls so far.
fn create_pids(store: &Path) -> Vec<i32> {
    std::fs::read_to_string(store.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|call| {
            call["argv"]
                .as_array()
                .is_some_and(|argv| argv.iter().any(|arg| arg == "create"))
        })
        .filter_map(|call| call["pid"].as_i64().map(|pid| pid as i32))
        .collect()
}

/// (machine state, count) and (container state, count) rows of a deployment.
pub(crate) async fn row_states(
    env: &TestEnv,
    id: Uuid,
) -> (Vec<String>, Vec<(String, i64, String)>) {
    let machines = env
        .deployment_store()
        .machines(id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.state.to_string())
        .collect();
    let containers = env
        .deployment_store()
        .containers(id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.name, c.generation, c.state.to_string()))
        .collect();
    (machines, containers)
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not reaped by PID 1 here) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn job_ids(env: &TestEnv, id: Uuid, kind: &str) -> Vec<(Uuid, String, i64)> {
    let client = env.sql().await;
    client
        .query(
            "SELECT id, state, attempt FROM jobs WHERE group_id = $1 AND kind = $2 ORDER BY created_at",
            &[&id, &kind],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// The most jobs of `kind` of the deployment that held a run at the same instant, from
/// their rows: each runs from its claim (`started_at`) to its outcome's commit
/// (`finished_at`), which is also when its concurrency slot is held.
async fn most_running_at_once(env: &TestEnv, id: Uuid, kind: &str) -> i64 {
    let client = env.sql().await;
    let rows = client
        .query(
            "SELECT started_at, finished_at FROM jobs WHERE group_id = $1 AND kind = $2",
            &[&id, &kind],
        )
        .await
        .unwrap();
    let mut edges: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
    for row in &rows {
        let started: chrono::DateTime<chrono::Utc> = row.get(0);
        let finished: chrono::DateTime<chrono::Utc> = row.get(1);
        edges.push((started, 1));
        edges.push((finished, -1));
    }
    // An end before a start at the same instant: a freed slot taken at once.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most
}

/// Provisioning proper: from the first machine's create starting to the join.
async fn provisioning_span(env: &TestEnv, id: Uuid) -> Duration {
    let events = env
        .deployment_store()
        .deployment_events(id, 1000)
        .await
        .unwrap();
    let first_create = events
        .iter()
        .find(|event| event.to_state.as_deref() == Some("creating"))
        .map(|event| event.at)
        .unwrap();
    let joined = events
        .iter()
        .find(|event| {
            event.subject == "deployment" && event.to_state.as_deref() == Some("provisioned")
        })
        .map(|event| event.at)
        .unwrap();
    (joined - first_create).to_std().unwrap()
}

pub(crate) async fn teardown_and_check_empty(env: &TestEnv, id: Uuid, name: &str) {
    let (code, _, err) = lc_with(
        env,
        &["deploy", "teardown", name, "--wait", "--timeout", "60s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    assert!(
        containers_of(id).is_empty(),
        "containers left after teardown: {:?}",
        containers_of(id)
    );
    let (machines, containers) = row_states(env, id).await;
    assert!(
        machines.iter().all(|state| state == "removed"),
        "machine rows: {machines:?}"
    );
    assert!(
        containers.iter().all(|(_, _, state)| state == "removed"),
        "container rows: {containers:?}"
    );
}

async fn stop_all(workers: Vec<InProcessWorker>) {
    for worker in workers {
        worker.stop().await;
    }
}

/// The five machines of a deployment are created at the same time. Each create waits
/// at the stand-in's barrier (`STANDIN_CLAIM_BARRIER`, after its name check) until all
/// five have started: machines made one after another, or fewer at once, never get
/// past it (the first create gives up after 60 s, and a retried create shows as a
/// second create call below). No clock decides: the test does not depend on how busy
/// the machine is.
#[tokio::test]
async fn deploy_five_nodes_provision_in_parallel_and_deploy() {
    let env = TestEnv::new().await;
    let name = unique(&env, "par");
    let _guard = Containers(vec![name.clone()]);
    let barrier = format!(
        "STANDIN_CLAIM_BARRIER={}:5:together",
        env.standin_dir().join("five-at-once").display()
    );
    let workers = vec![
        env.spawn_worker(config_with(&env, &[&barrier])),
        env.spawn_worker(config_with(&env, &[&barrier])),
    ];
    let started = Instant::now();
    let id = create(&env, &machine_spec(&name, 5, 3), &[]).await;
    let row = wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let deployed = started.elapsed();
    let span = provisioning_span(&env, id).await;
    println!(
        "5 machines provisioned in {} ms (first create started → all ready); deployed {} ms \
         after `lc deploy create`",
        span.as_millis(),
        deployed.as_millis()
    );
    assert_eq!(row.generation, 1);
    let store = store_dir(&env, id);
    let expected: Vec<String> = (1..=5).map(|n| format!("{name}-{n}")).collect();
    assert_eq!(stored_machines(&env, id).await, expected);
    for machine in &expected {
        assert_eq!(
            create_calls(&store, machine),
            1,
            "{machine} created more than once"
        );
    }
    let machines = env.deployment_store().machines(id).await.unwrap();
    assert!(
        machines
            .iter()
            .all(|m| m.state == "ready" && m.engine_url.as_deref() == Some(docker_host().as_str()))
    );
    assert!(
        machines
            .iter()
            .all(|m| m.ip_address.is_none() && m.driver.as_deref() == Some("none"))
    );
    let running = containers_of(id);
    assert_eq!(running.len(), 5, "containers: {running:?}");
    assert!(running.iter().all(|(_, _, state)| state == "running"));
    let mut names: Vec<String> = running.into_iter().map(|(_, name, _)| name).collect();
    names.sort();
    assert_eq!(
        names,
        expected
            .iter()
            .map(|m| format!("lc-{m}-g1"))
            .collect::<Vec<_>>()
    );
    // The machines really ran in parallel: their create calls overlapped.
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name, "--json"], &[], &[]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["machines"].as_array().unwrap().len(), 5);
    assert_eq!(shown["containers"].as_array().unwrap().len(), 5);

    teardown_and_check_empty(&env, id, &name).await;
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    // A second teardown is harmless.
    let (code, out, _) = lc_with(&env, &["deploy", "teardown", &id.to_string()], &[], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("torn down already"), "{out}");
    let again = env
        .producer()
        .enqueue(
            <lc_deployment::kinds::Teardown as lc_shared::kind::JobType>::job(
                &lc_deployment::TeardownPayload {
                    deployment_id: id,
                    reason: None,
                    expiry: None,
                },
            )
            .unwrap()
            .with_group(id),
        )
        .await
        .unwrap();
    let states = env
        .wait_terminal(&[again.id], Duration::from_secs(30))
        .await;
    assert_eq!(states[&again.id], lc_shared::JobState::Succeeded);
    assert!(stored_machines(&env, id).await.is_empty());
    assert_eq!(deployment(&env, id).await.state, "torn_down");
    stop_all(workers).await;
}

#[tokio::test]
async fn deploy_create_that_fails_twice_is_retried_and_adopted_without_duplicates() {
    let env = TestEnv::new().await;
    let name = unique(&env, "flaky");
    let _guard = Containers(vec![name.clone()]);
    // Each machine: the first create fails cleanly, the second leaves a half-made
    // machine behind, the third works.
    let worker = env.spawn_worker(config_with(
        &env,
        &["STANDIN_FAIL_CREATE=1", "STANDIN_HALF_CREATE=1"],
    ));
    let id = create(&env, &machine_spec(&name, 2, 5), &[]).await;
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let store = store_dir(&env, id);
    let expected = vec![format!("{name}-1"), format!("{name}-2")];
    assert_eq!(
        stored_machines(&env, id).await,
        expected,
        "one machine per node in the store"
    );
    for machine in &expected {
        assert_eq!(
            create_calls(&store, machine),
            3,
            "{machine}: two failed creates, then one that worked"
        );
    }
    let removed_half_made = calls(&store)
        .iter()
        .filter(|(op, _, _, _)| op == "rm")
        .count();
    assert!(
        removed_half_made >= 2,
        "the half-made machines were removed before retrying"
    );
    for (job, state, attempt) in job_ids(&env, id, "provision_machine").await {
        assert_eq!(state, "succeeded", "job {job}");
        assert_eq!(attempt, 3, "job {job} took {attempt} attempts");
    }
    let (machines, containers) = row_states(&env, id).await;
    assert_eq!(machines, vec!["ready", "ready"]);
    assert_eq!(containers.len(), 2);
    assert_eq!(containers_of(id).len(), 2);
    teardown_and_check_empty(&env, id, &name).await;
    assert!(stored_machines(&env, id).await.is_empty());
    worker.stop().await;
}

#[tokio::test]
async fn deploy_create_that_fails_for_good_rolls_back_everything() {
    let env = TestEnv::new().await;
    let name = unique(&env, "doomed");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(config_with(
        &env,
        &[
            "STANDIN_FAIL_CREATE=always",
            &format!("STANDIN_FAIL_MATCH={name}-2$"),
            // A failed create's driver plugin would outlive it by a minute.
            "STANDIN_PLUGIN_LINGER_MS=60000",
        ],
    ));
    let id = create(&env, &machine_spec(&name, 3, 2), &[]).await;
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    // Each call's process group was emptied when it ended: no plugin child is left,
    // though each would have lingered a minute.
    let plugins =
        std::fs::read_to_string(env.standin_dir().join("plugin-children")).unwrap_or_default();
    let plugins: Vec<i32> = plugins
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    assert!(
        !plugins.is_empty(),
        "the failed creates started plugin children"
    );
    assert!(
        plugins.iter().all(|pid| !alive(*pid)),
        "plugin children outlived their calls: {plugins:?}"
    );
    // No crash report would have left the machine.
    assert!(
        !env.standin_dir().join("bugsnag-would-send.log").exists(),
        "a crash report would have been sent"
    );
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("machine {name}-2 failed")),
        "last error: {error}"
    );
    let store = store_dir(&env, id);
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    assert!(containers_of(id).is_empty());
    assert_eq!(
        create_calls(&store, &format!("{name}-2")),
        2,
        "two attempts, then the rollback"
    );
    let (machines, containers) = row_states(&env, id).await;
    assert!(
        machines.iter().all(|state| state == "removed"),
        "{machines:?}"
    );
    assert!(
        containers.is_empty(),
        "the deploy never ran: {containers:?}"
    );
    assert!(job_ids(&env, id, "deploy").await.is_empty());
    let teardowns = job_ids(&env, id, "teardown").await;
    assert_eq!(teardowns.len(), 1, "one rollback teardown: {teardowns:?}");
    assert_eq!(teardowns[0].1, "succeeded");
    let path = deployment_path(&env, id).await;
    assert_eq!(
        path,
        ["provisioning", "failed", "tearing_down", "torn_down"]
    );
    worker.stop().await;
}

#[tokio::test]
async fn deploy_worker_killed_during_create_converges_without_duplicates() {
    let env = TestEnv::new().await;
    let name = unique(&env, "kill-create");
    let _guard = Containers(vec![name.clone()]);
    let mut first =
        env.spawn_worker_process_with_env(&["--machine-env", "STANDIN_CREATE_DELAY_MS=3000"], &[]);
    let id = create(&env, &machine_spec(&name, 2, 5), &[]).await;
    let store = store_dir(&env, id);
    wait_for("both creates to start", Duration::from_secs(30), || async {
        let started = calls(&store)
            .iter()
            .filter(|(op, _, _, _)| op == "create")
            .count();
        (started == 2).then_some(())
    })
    .await;
    let orphans: Vec<i32> = create_pids(&store);
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    // Like the real docker-machine, a create whose worker died is killed by SIGPIPE at
    // its next line of output: it does not outlive its worker.
    wait_for(
        "the orphaned creates to die",
        Duration::from_secs(15),
        || async { orphans.iter().all(|pid| !alive(*pid)).then_some(()) },
    )
    .await;
    // The next worker decides from what the database recorded of each machine: a
    // half-made entry is removed and the machine created again, once.
    let second = env.spawn_worker(env.worker_config());
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let expected = vec![format!("{name}-1"), format!("{name}-2")];
    assert_eq!(stored_machines(&env, id).await, expected);
    for machine in &expected {
        assert_eq!(
            create_calls(&store, machine),
            2,
            "{machine}: the interrupted create and one more"
        );
    }
    for (job, state, attempt) in job_ids(&env, id, "provision_machine").await {
        assert_eq!(state, "succeeded", "job {job}");
        assert!(attempt >= 2, "job {job} ran again after the kill");
    }
    let running = containers_of(id);
    assert_eq!(running.len(), 2, "{running:?}");
    teardown_and_check_empty(&env, id, &name).await;
    assert!(stored_machines(&env, id).await.is_empty());
    second.stop().await;
}

#[tokio::test]
async fn deploy_worker_killed_during_deploy_converges_without_duplicates() {
    let env = TestEnv::new().await;
    let name = unique(&env, "kill-deploy");
    let _guard = Containers(vec![name.clone()]);
    let mut first = env.spawn_worker_process(&[]);
    // More machines than a first deploy starts at once, so that the kill lands while
    // some are still to come.
    let nodes = lc_deployment::kinds::PARALLEL_MACHINES + 4;
    let id = create(&env, &local_spec(&name, nodes), &[]).await;
    wait_for(
        "the deploy to create its first container",
        Duration::from_secs(60),
        || async {
            let client = env.sql().await;
            let count: i64 = client
                .query_one(
                    "SELECT count(*) FROM containers WHERE deployment_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            (count >= 1).then_some(())
        },
    )
    .await;
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    let before = containers_of(id).len();
    assert!(
        before < nodes,
        "the kill came after the whole deploy ({before} containers)"
    );
    let second = env.spawn_worker(env.worker_config());
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let running = containers_of(id);
    assert_eq!(
        running.len(),
        nodes,
        "one container per machine: {running:?}"
    );
    assert!(running.iter().all(|(_, _, state)| state == "running"));
    let mut names: Vec<String> = running.into_iter().map(|(_, name, _)| name).collect();
    names.sort();
    let mut expected: Vec<String> = (1..=nodes).map(|n| format!("lc-{name}-{n}-g1")).collect();
    expected.sort();
    assert_eq!(names, expected);
    let deploys = job_ids(&env, id, "deploy").await;
    assert_eq!(deploys.len(), 1);
    assert_eq!(deploys[0].1, "succeeded");
    assert!(deploys[0].2 >= 2, "the deploy ran again after the kill");
    let (_, containers) = row_states(&env, id).await;
    assert_eq!(containers.len(), nodes);
    assert!(
        containers.iter().all(|(_, _, state)| state == "running"),
        "{containers:?}"
    );
    teardown_and_check_empty(&env, id, &name).await;
    second.stop().await;
}

#[tokio::test]
async fn deploy_teardown_while_provisioning_leaves_nothing() {
    let env = TestEnv::new().await;
    let name = unique(&env, "early");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(config_with(&env, &["STANDIN_CREATE_DELAY_MS=2500"]));
    let id = create(&env, &machine_spec(&name, 3, 3), &[]).await;
    let store = store_dir(&env, id);
    wait_for("the creates to start", Duration::from_secs(30), || async {
        (calls(&store).iter().any(|(op, _, _, _)| op == "create")).then_some(())
    })
    .await;
    let (code, out, err) = lc_with(&env, &["deploy", "teardown", &name], &[], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("was provisioning"), "{out}");
    wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    // Nothing shows up later either (no create was still running behind the teardown).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines appeared: {:?}",
        stored_machines(&env, id).await
    );
    assert!(containers_of(id).is_empty());
    assert!(
        job_ids(&env, id, "deploy").await.is_empty(),
        "no deploy after a teardown"
    );
    let (machines, _) = row_states(&env, id).await;
    assert!(
        machines.iter().all(|state| state == "removed"),
        "{machines:?}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn deploy_hanging_docker_machine_is_killed_at_its_timeout() {
    let env = TestEnv::new().await;
    let name = unique(&env, "hang");
    let mut config = config_with(&env, &["STANDIN_HANG=create"]);
    // 3 s rather than less: on 2 loaded cores the test must see the hang before the
    // timeout ends it.
    config.machines.machine_timeout = Duration::from_secs(3);
    let worker = env.spawn_worker(config);
    let id = create(&env, &machine_spec(&name, 1, 2), &[]).await;
    let store = store_dir(&env, id);
    let (child, parent) = wait_for("the create to hang", Duration::from_secs(30), || async {
        Some((
            read_pid(&store.join("hang-child.pid"))?,
            read_pid(&store.join("hang.pid"))?,
        ))
    })
    .await;
    let hung = Instant::now();
    assert!(alive(child));
    wait_for(
        "the hung call's process group to die",
        Duration::from_secs(15),
        || async { (!alive(child) && !alive(parent)).then_some(()) },
    )
    .await;
    let took = hung.elapsed();
    println!(
        "hung docker-machine create killed {} ms after it hung (timeout 3000 ms)",
        took.as_millis()
    );
    // Without the timeout it would hang for an hour; the margin above 3 s is for a
    // busy machine (CI shares 2 cores with the whole suite).
    assert!(took < Duration::from_secs(10), "killed after {took:?}");
    // Both attempts time out; the rollback removes the half-made machine.
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    assert!(
        row.last_error
            .unwrap_or_default()
            .contains("did not finish within")
    );
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    let hangs = std::fs::read_to_string(store.join("hang-children")).unwrap();
    for line in hangs.lines() {
        let pid: i32 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(!alive(pid), "orphaned sleep {pid} from {line:?}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn deploy_cancelling_a_hanging_create_kills_it_at_once() {
    let env = TestEnv::new().await;
    let name = unique(&env, "cancel");
    let worker = env.spawn_worker(config_with(&env, &["STANDIN_HANG=create"]));
    let id = create(&env, &machine_spec(&name, 1, 3), &[]).await;
    let store = store_dir(&env, id);
    let child = wait_for("the create to hang", Duration::from_secs(30), || async {
        read_pid(&store.join("hang-child.pid"))
    })
    .await;
    let job = job_ids(&env, id, "provision_machine").await[0].0;
    let (code, _, err) = lc_with(&env, &["jobs", "cancel", &job.to_string()], &[], &[]).await;
    assert_eq!(code, 0, "{err}");
    let cancelled = Instant::now();
    wait_for(
        "the hung call to be killed",
        Duration::from_secs(20),
        || async { (!alive(child)).then_some(()) },
    )
    .await;
    let took = cancelled.elapsed();
    println!(
        "cancel killed the hung create in {} ms (machine timeout 30 s)",
        took.as_millis()
    );
    // Well before the 30 s machine timeout, so the cancel killed it; the margin is for
    // a busy machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The watchdog sees the cancelled job and rolls the deployment back.
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    assert!(row.last_error.unwrap_or_default().contains("cancelled"));
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    worker.stop().await;
}

#[tokio::test]
async fn deploy_watchdog_rolls_back_a_machine_job_lost_to_lease_expiry() {
    let env = TestEnv::new().await;
    let name = unique(&env, "lost");
    let _guard = Containers(vec![name.clone()]);
    let mut first =
        env.spawn_worker_process_with_env(&["--machine-env", "STANDIN_CREATE_DELAY_MS=2500"], &[]);
    // One attempt per machine: the kill uses it up, so the job dies by lease expiry.
    let id = create(&env, &machine_spec(&name, 2, 1), &[]).await;
    let store = store_dir(&env, id);
    wait_for("the creates to start", Duration::from_secs(30), || async {
        (calls(&store)
            .iter()
            .filter(|(op, _, _, _)| op == "create")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    first.signal(libc::SIGKILL);
    first.wait(Duration::from_secs(10));
    let second = env.spawn_worker(env.worker_config());
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("is dead") && error.contains("lease expired"),
        "last error: {error}"
    );
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines left: {:?}",
        stored_machines(&env, id).await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stored_machines(&env, id).await.is_empty(),
        "machines appeared: {:?}",
        stored_machines(&env, id).await
    );
    assert!(containers_of(id).is_empty());
    second.stop().await;
}

#[tokio::test]
async fn deploy_refuses_invalid_specs_and_missing_credentials_and_makes_nothing() {
    let env = TestEnv::new().await;
    let name = unique(&env, "bad");
    let token_var = format!("LC_TEST_TOKEN_{}", env.prefix[1..9].to_uppercase());
    let cases: Vec<(String, &str)> = vec![
        (local_spec("Bad_Name", 1), "invalid deployment name"),
        (
            local_spec(&format!("{name}-{}", "x".repeat(40)), 1),
            "invalid deployment name",
        ),
        (
            local_spec(&name, 1).replace("kind: local", "kind: hetzner"),
            "unknown variant `hetzner`",
        ),
        (
            local_spec(&name, 1).replace("nodes: 1", "nodes: 0"),
            "nodes",
        ),
        (
            local_spec(&name, 1).replace("network_mode: none", "network_mode: bridge"),
            "unknown variant `bridge`",
        ),
        (
            local_spec(&name, 1).replace("owner: tests", "owner: tests\ncolour: blue"),
            "unknown field `colour`",
        ),
        (
            machine_spec(&name, 1, 1).replace("driver: none", "driver: 'none; touch /tmp/x'"),
            "provider.driver",
        ),
        (
            machine_spec(&name, 1, 1).replace(
                "driver_flags: {",
                "driver_flags: {digitalocean-access-token: abc, ",
            ),
            "looks like a credential",
        ),
        (
            machine_spec(&name, 1, 1).replace(
                "driver: none,",
                &format!("driver: digitalocean, credentials_env: [{token_var}],"),
            ),
            "not set",
        ),
        (
            machine_spec(&name, 1, 1).replace(
                "driver: none,",
                "driver: digitalocean, credentials_env: [not-a-name],",
            ),
            "credentials_env",
        ),
    ];
    for (spec, expected) in &cases {
        let path = write_spec(&env, spec);
        let (code, out, err) = lc_with(
            &env,
            &["deploy", "create", path.to_str().unwrap()],
            &[],
            &[&token_var],
        )
        .await;
        assert_eq!(
            code, 1,
            "expected a refusal ({expected}) for:\n{spec}\nstdout: {out}"
        );
        assert!(err.contains(expected), "error for {expected:?} was: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    let client = env.sql().await;
    for table in ["deployments", "machines", "containers", "jobs"] {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0, "{table} has rows after refused specs");
    }
    assert!(
        !env.worker_config().machines.machines_dir.exists(),
        "docker-machine ran"
    );

    // Set for `lc` but not for the worker: the worker refuses at run time, before any
    // docker-machine call, and the deployment is rolled back.
    let spec = machine_spec(&name, 1, 3).replace(
        "driver: none,",
        &format!("driver: digitalocean, credentials_env: [{token_var}],"),
    );
    let worker = env.spawn_worker(env.worker_config());
    let id = create(&env, &spec, &[(&token_var, "set-for-lc-only")]).await;
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(30)).await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains(&token_var) && error.contains("not set in this worker's environment"),
        "{error}"
    );
    let store = store_dir(&env, id);
    assert_eq!(
        calls(&store)
            .iter()
            .filter(|(op, _, _, _)| op == "create")
            .count(),
        0
    );
    assert!(stored_machines(&env, id).await.is_empty());
    let machine_jobs = job_ids(&env, id, "provision_machine").await;
    assert_eq!(machine_jobs[0].1, "dead");
    assert_eq!(machine_jobs[0].2, 1, "a missing credential is not retried");
    worker.stop().await;
}

#[tokio::test]
async fn deploy_credentials_never_reach_logs_rows_or_events() {
    let env = TestEnv::new().await;
    let name = unique(&env, "secret");
    let _guard = Containers(vec![name.clone()]);
    let token = format!(
        "dop_v1_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    );
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let mut worker = env.spawn_worker_process_with_env(
        &[
            "--machine-env",
            &engine,
            "--machine-env",
            "STANDIN_FAIL_CREATE=1",
        ],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    let spec = machine_spec(&name, 2, 3)
        .replace(
            &format!("driver: none, driver_flags: {{url: '{}'}}", docker_host()),
            "driver: digitalocean, driver_flags: {digitalocean-region: fra1}, credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]",
        );
    assert!(spec.contains("digitalocean"), "{spec}");
    let id = create(
        &env,
        &spec,
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    )
    .await;
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let store = store_dir(&env, id);
    // The token reached docker-machine, as environment only; the driver saved it in the
    // machine's store entry, which the database holds sealed, never in clear.
    let config = machine_config(&env, id, &format!("{name}-1")).await;
    assert!(config.contains(&token), "the driver got the token");
    let sealed = env
        .sql()
        .await
        .query_one(
            "SELECT store_entry FROM machines WHERE deployment_id = $1 AND node_index = 1",
            &[&id],
        )
        .await
        .unwrap()
        .get::<_, Vec<u8>>(0);
    assert!(
        !sealed
            .windows(token.len())
            .any(|window| window == token.as_bytes()),
        "the token is stored in clear"
    );
    assert_eq!(
        cloud_droplets(&env).len(),
        2,
        "the simulated cloud has both droplets"
    );
    for (op, _, env_names, argv) in calls(&store) {
        assert!(
            argv.iter().all(|arg| !arg.contains(&token)),
            "token in the arguments of {op}"
        );
        if op == "create" {
            assert!(
                env_names.contains(&"DIGITALOCEAN_ACCESS_TOKEN".to_owned()),
                "create without the token"
            );
        }
    }
    assert_eq!(containers_of(id).len(), 2);
    let (_, show, _) = lc_with(&env, &["deploy", "show", &name, "--json"], &[], &[]).await;
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "60s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(stored_machines(&env, id).await.is_empty());
    assert!(containers_of(id).is_empty());
    assert!(
        cloud_droplets(&env).is_empty(),
        "droplets left billing: {:?}",
        cloud_droplets(&env)
    );
    worker.signal(libc::SIGTERM);
    worker.wait(Duration::from_secs(20));

    let log = worker.log_text();
    assert!(log.contains("worker started"), "worker log is empty: {log}");
    assert!(!log.contains(&token), "token in the worker log");
    assert!(!show.contains(&token), "token in lc deploy show");
    let client = env.sql().await;
    for table in [
        "jobs",
        "job_events",
        "deployments",
        "machines",
        "containers",
        "deployment_events",
    ] {
        let rows = client
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .await
            .unwrap();
        assert!(
            !rows.is_empty() || table == "containers",
            "{table} is empty"
        );
        for row in rows {
            let text: String = row.get(0);
            assert!(!text.contains(&token), "token in {table}: {text}");
        }
    }
    // The job history holds the docker-machine output, redacted.
    let logged: i64 = client
        .query_one(
            "SELECT count(*) FROM job_events WHERE message LIKE '%docker-machine create%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(logged >= 3, "create calls are logged ({logged})");
    for (job, _, _) in job_ids(&env, id, "provision_machine").await {
        let (_, out, _) = lc_with(
            &env,
            &["jobs", "show", &job.to_string(), "--json"],
            &[],
            &[],
        )
        .await;
        assert!(!out.contains(&token));
    }
}

#[tokio::test]
async fn deploy_update_replaces_containers_one_machine_at_a_time() {
    let env = TestEnv::new().await;
    let name = unique(&env, "roll");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let spec = local_spec(&name, 3);
    let id = create(&env, &spec, &[]).await;
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let (code, err) = update_and_wait(
        &env,
        &spec.replace("command: [sleep, '3600']", "command: [sleep, '7200']"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(deployment(&env, id).await.generation, 2);
    let mut running: Vec<String> = containers_of(id)
        .into_iter()
        .map(|(_, name, _)| name)
        .collect();
    running.sort();
    assert_eq!(
        running,
        (1..=3)
            .map(|n| format!("lc-{name}-{n}-g2"))
            .collect::<Vec<_>>()
    );
    let (_, containers) = row_states(&env, id).await;
    assert_eq!(
        containers
            .iter()
            .filter(|(_, generation, state)| *generation == 1 && state == "removed")
            .count(),
        3
    );
    assert_eq!(
        containers
            .iter()
            .filter(|(_, generation, state)| *generation == 2 && state == "running")
            .count(),
        3
    );
    // Rolling: machine n's new container runs before machine n+1's old one goes.
    let events = env
        .deployment_store()
        .deployment_events(id, 500)
        .await
        .unwrap();
    let position = |subject: String, to: &str| {
        events
            .iter()
            .position(|event| event.subject == subject && event.to_state.as_deref() == Some(to))
            .unwrap_or_else(|| panic!("no event {subject} → {to}"))
    };
    for n in 1..3 {
        assert!(
            position(format!("container lc-{name}-{n}-g2"), "running")
                < position(format!("container lc-{name}-{}-g1", n + 1), "removed")
        );
    }
    // A spec that changes the nodes is refused.
    let path = write_spec(&env, &local_spec(&name, 4));
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "update", path.to_str().unwrap()],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("changing nodes"), "{err}");
    teardown_and_check_empty(&env, id, &name).await;
    worker.stop().await;
}

#[tokio::test]
async fn deploy_missing_image_is_a_fatal_clear_error() {
    let env = TestEnv::new().await;
    let name = unique(&env, "noimage");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    // On the loopback registry, so that the failed pull asks nothing outside the
    // machine (a bare name would make the engine look up Docker Hub).
    let registry = std::env::var("LC_REGISTRY").expect("LC_REGISTRY is set by scripts/services.sh");
    let spec = local_spec(&name, 1)
        .replace(
            &format!("image: {}", image()),
            &format!("image: {registry}/lc-missing-{}:latest", env.prefix),
        )
        .replace("pull: never", "pull: if-missing");
    let id = create(&env, &spec, &[]).await;
    let row = wait_state(&env, id, "failed", Duration::from_secs(60)).await;
    let error = row.last_error.unwrap_or_default();
    assert!(
        error.contains("is not on the engine") && error.contains("could not be pulled"),
        "{error}"
    );
    let deploys = job_ids(&env, id, "deploy").await;
    assert_eq!(deploys[0].1, "dead");
    assert_eq!(deploys[0].2, 1, "not retried");
    let (_, out, _) = lc_with(&env, &["deploy", "show", &name], &[], &[]).await;
    assert!(out.contains("could not be pulled"), "{out}");
    teardown_and_check_empty(&env, id, &name).await;
    worker.stop().await;
}

/// The `openssl` CLI: does `cert` verify against `ca`?
fn openssl_verifies(ca: &Path, cert: &Path) -> bool {
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

/// Scratch stores left under a worker's machines directory.
fn scratch_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn deployment_ca(env: &TestEnv, id: Uuid) -> (Option<String>, bool) {
    let row = env
        .sql()
        .await
        .query_one(
            "SELECT ca_cert, tls_sealed IS NOT NULL FROM deployments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Worker processes as on two hosts: each its own machines directory, nothing shared
/// but the database and Redis. 8 machines created in parallel by one all get
/// certificates from the deployment's one CA; the other tears them all down.
#[tokio::test]
async fn deploy_machines_belong_to_the_deployment_not_to_a_worker_disk() {
    let env = TestEnv::new().await;
    let name = unique(&env, "hosts");
    let _guard = Containers(vec![name.clone()]);
    let token = format!("dop_v1_{}", Uuid::new_v4().simple());
    let dir_a = std::env::temp_dir().join(format!("lc-host-a-{}", env.prefix));
    let dir_b = std::env::temp_dir().join(format!("lc-host-b-{}", env.prefix));
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let host = |dir: &Path| {
        env.spawn_worker_process_with_env(
            &["--machine-env", &engine, "--concurrency", "10"],
            &[
                ("DIGITALOCEAN_ACCESS_TOKEN", token.as_str()),
                ("LC_MACHINES_DIR", dir.to_str().unwrap()),
            ],
        )
    };
    let mut a = host(&dir_a);
    let spec = machine_spec(&name, 8, 3).replace(
        &format!("driver: none, driver_flags: {{url: '{}'}}", docker_host()),
        "driver: digitalocean, driver_flags: {digitalocean-region: fra1}, credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]",
    );
    let id = create(
        &env,
        &spec,
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    )
    .await;
    wait_state(&env, id, "deployed", Duration::from_secs(120)).await;
    assert_eq!(cloud_droplets(&env).len(), 8, "{:?}", cloud_droplets(&env));
    // One CA, made before the machines, verifies every machine's server certificate.
    let (ca, sealed) = deployment_ca(&env, id).await;
    let ca_file = env.standin_dir().join("deployment-ca.pem");
    std::fs::write(&ca_file, ca.expect("the deployment's CA is recorded")).unwrap();
    assert!(sealed, "the CA key is stored sealed");
    for node in 1..=8 {
        let server = env
            .standin_dir()
            .join(format!("cloud/{name}-{node}.server.pem"));
        assert!(
            openssl_verifies(&ca_file, &server),
            "{name}-{node}'s server certificate does not verify against the deployment's CA"
        );
    }
    assert!(
        !calls(&store_dir(&env, id))
            .iter()
            .any(|(op, _, _, argv)| op == "create" && !argv.iter().any(|arg| arg == "--tls-ca-key")),
        "a create ran without the deployment's certificates"
    );
    a.signal(libc::SIGTERM);
    a.wait(Duration::from_secs(20));
    assert!(
        scratch_left(&dir_a).is_empty(),
        "host A keeps {:?}",
        scratch_left(&dir_a)
    );

    // Host B never saw these machines on its disk, and removes them all.
    let mut b = host(&dir_b);
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "90s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    assert_eq!(deployment(&env, id).await.state, "torn_down");
    assert!(
        cloud_droplets(&env).is_empty(),
        "droplets left billing: {:?}",
        cloud_droplets(&env)
    );
    assert!(stored_machines(&env, id).await.is_empty());
    assert!(containers_of(id).is_empty());
    assert!(
        !deployment_ca(&env, id).await.1,
        "the keys outlived the machines"
    );
    b.signal(libc::SIGTERM);
    b.wait(Duration::from_secs(20));
    assert!(
        scratch_left(&dir_b).is_empty(),
        "host B keeps {:?}",
        scratch_left(&dir_b)
    );
    assert!(
        calls(&store_dir(&env, id))
            .iter()
            .all(|(_, _, env_names, _)| env_names.contains(&"MACHINE_BUGSNAG_API_TOKEN".to_owned())),
        "a docker-machine call ran without the crash-report opt-out"
    );
}

/// `docker` against the TLS engine of `scripts/services.sh`, with its client certificate.
fn tls_docker(args: &[&str]) -> std::process::Output {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by scripts/services.sh"))
    };
    Command::new("docker")
        .args(["--tlsverify", "--tlscacert", &var("LC_TLS_CA_CERT")])
        .args([
            "--tlscert",
            &var("LC_TLS_CLIENT_CERT"),
            "--tlskey",
            &var("LC_TLS_CLIENT_KEY"),
        ])
        .args(["-H", &var("LC_TLS_DOCKER_HOST")])
        .args(args)
        .output()
        .expect("docker CLI")
}

fn tls_containers(id: Uuid) -> Vec<String> {
    let output = tls_docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=lc.deployment={id}"),
        "--format",
        "{{.Names}} {{.State}}",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A spec whose machines are the TLS engine (`tcp://`), registered with the none driver.
fn tls_spec(name: &str, nodes: usize, image: &str, with_ca: bool) -> String {
    let ca = if with_ca {
        ", ca_env: {cert: LC_TLS_CA_CERT, key: LC_TLS_CA_KEY}"
    } else {
        ""
    };
    format!(
        "name: {name}\nowner: tests\nnodes: {nodes}\n\
         provider: {{kind: docker-machine, driver: none, driver_flags: {{url: '{}'}}{ca}}}\n\
         payload:\n  image: {image}\n  command: [sleep, '3600']\n  network_mode: none\n\
         max_attempts: 3\ntimeouts: {{stop: 1s}}\n",
        std::env::var("LC_TLS_DOCKER_HOST")
            .expect("LC_TLS_DOCKER_HOST is set by scripts/services.sh"),
    )
}

/// The `tcp://` path for real: machines on a TLS engine whose certificate the
/// operator's CA signed; the image is pulled from the local registry; a worker on
/// another "host" rolls an update out; teardown leaves nothing on the engine.
#[tokio::test]
async fn deploy_over_tls_pulls_from_the_registry_and_updates_from_another_worker() {
    let env = TestEnv::new().await;
    let name = unique(&env, "tls");
    // A tag of this test's own, so the TLS engine has never pulled it.
    let registry = std::env::var("LC_REGISTRY").expect("LC_REGISTRY is set by scripts/services.sh");
    let tagged = format!("{registry}/lc-busybox:{}", env.prefix);
    for args in [
        vec!["tag", image().as_str(), tagged.as_str()],
        vec!["push", tagged.as_str()],
    ] {
        let output = Command::new("docker").args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir_a = std::env::temp_dir().join(format!("lc-host-a-{}", env.prefix));
    let dir_b = std::env::temp_dir().join(format!("lc-host-b-{}", env.prefix));
    let mut a =
        env.spawn_worker_process_with_env(&[], &[("LC_MACHINES_DIR", dir_a.to_str().unwrap())]);
    let spec = tls_spec(&name, 3, &tagged, true);
    let id = create(&env, &spec, &[]).await;
    wait_state(&env, id, "deployed", Duration::from_secs(90)).await;
    let running = tls_containers(id);
    assert_eq!(
        running,
        (1..=3)
            .map(|n| format!("lc-{name}-{n}-g1 running"))
            .collect::<Vec<_>>()
    );
    let client = env.sql().await;
    let pulls: Vec<String> = client
        .query(
            "SELECT e.message FROM job_events e JOIN jobs j ON j.id = e.job_id
             WHERE j.group_id = $1 AND e.message LIKE 'pull of %'",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(!pulls.is_empty(), "the image was pulled from the registry");
    assert!(
        pulls.iter().all(|pull| pull.lines().count() <= 21),
        "pull progress is a few lines: {pulls:?}"
    );
    a.signal(libc::SIGTERM);
    a.wait(Duration::from_secs(20));

    // Another host rolls generation 2 out over TLS.
    let mut b =
        env.spawn_worker_process_with_env(&[], &[("LC_MACHINES_DIR", dir_b.to_str().unwrap())]);
    let (code, err) = update_and_wait(
        &env,
        &spec.replace("command: [sleep, '3600']", "command: [sleep, '3601']"),
    )
    .await;
    assert_eq!(code, 0, "update failed: {err}");
    assert_eq!(
        tls_containers(id),
        (1..=3)
            .map(|n| format!("lc-{name}-{n}-g2 running"))
            .collect::<Vec<_>>()
    );
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "90s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    assert!(tls_containers(id).is_empty(), "{:?}", tls_containers(id));
    b.signal(libc::SIGTERM);
    b.wait(Duration::from_secs(20));
    let _ = tls_docker(&["rmi", "-f", &tagged]);
    let _ = Command::new("docker").args(["rmi", &tagged]).output();
}

/// An engine whose certificate the deployment's CA did not sign: a fatal error that
/// names the machine and the reason, no retries.
#[tokio::test]
async fn deploy_to_a_tls_engine_of_another_ca_fails_clearly() {
    let env = TestEnv::new().await;
    let name = unique(&env, "wrongca");
    let worker = env.spawn_worker(env.worker_config());
    // No ca_env: the deployment gets a CA of its own, which the engine never heard of.
    let id = create(&env, &tls_spec(&name, 1, &image(), false), &[]).await;
    let row = wait_state(&env, id, "failed", Duration::from_secs(60)).await;
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains(&format!("machine {name}-1")), "{error}");
    assert!(
        error.contains("not signed by the deployment's CA"),
        "{error}"
    );
    let deploys = job_ids(&env, id, "deploy").await;
    assert_eq!(deploys.len(), 1);
    assert_eq!(
        (deploys[0].1.as_str(), deploys[0].2),
        ("dead", 1),
        "fatal at once"
    );
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "60s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    worker.stop().await;
}

/// A teardown with one broken machine (its store entry lost `config.json`, as a killed
/// save leaves it) and one healthy one: the healthy one is removed, the broken one
/// reported loudly, and the deployment ends `leftovers`, listed by `lc stuck` until an
/// operator acknowledges it.
#[tokio::test]
async fn deploy_teardown_with_a_broken_machine_removes_the_rest_and_waits_for_an_operator() {
    let env = TestEnv::new().await;
    let name = unique(&env, "broken");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let id = create(&env, &machine_spec(&name, 2, 3), &[]).await;
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    // Break machine 2's entry: drop its config.json from the sealed record.
    let key = lc_shared::secrets::SecretKey::from_env()
        .unwrap()
        .expect("LC_SECRET_KEY");
    let client = env.sql().await;
    let row = client
        .query_one(
            "SELECT id, store_entry FROM machines WHERE deployment_id = $1 AND node_index = 2",
            &[&id],
        )
        .await
        .unwrap();
    let machine_id: Uuid = row.get(0);
    let mut entry = lc_deployment::runtime::machine_store::MachineEntry::open(
        &key,
        machine_id,
        &row.get::<_, Vec<u8>>(1),
    )
    .unwrap();
    assert!(entry.files.remove("config.json").is_some());
    client
        .execute(
            "UPDATE machines SET store_entry = $2 WHERE id = $1",
            &[&machine_id, &entry.seal(&key, machine_id)],
        )
        .await
        .unwrap();

    let (code, _, _) = lc_with(&env, &["deploy", "teardown", &name], &[], &[]).await;
    assert_eq!(code, 0);
    wait_state(&env, id, "leftovers", Duration::from_secs(60)).await;
    let machines = env.deployment_store().machines(id).await.unwrap();
    let states: Vec<(&str, &str)> = machines
        .iter()
        .map(|m| (m.name.as_str(), m.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            (format!("{name}-1").as_str(), "removed"),
            (format!("{name}-2").as_str(), "abandoned")
        ]
    );
    assert!(
        containers_of(id).is_empty(),
        "containers left: {:?}",
        containers_of(id)
    );
    let events = env
        .deployment_store()
        .deployment_events(id, 200)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|event| event.message.as_deref().is_some_and(|message| {
                message.contains(&format!("machine {name}-2 ABANDONED"))
                    && message.contains("no such file or directory")
                    && message.contains("driver none")
            })),
        "no loud event names the broken machine"
    );
    let (_, show, _) = lc_with(&env, &["deploy", "show", &name, "--json"], &[], &[]).await;
    let shown: Value = serde_json::from_str(&show).unwrap();
    assert!(
        shown["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|container| container["state"] != "running"),
        "lc deploy show lists removed containers as running: {show}"
    );
    let (code, stuck, _) = lc_with(&env, &["stuck", "--json"], &[], &[]).await;
    assert_eq!(code, 3, "lc stuck lists the leftovers");
    assert!(
        stuck.contains("leftovers") && stuck.contains(&format!("{name}-2")),
        "{stuck}"
    );
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "ack", &name, "--note", "checked"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{name}-2")), "{out}");
    assert_eq!(deployment(&env, id).await.state, "torn_down");
    let (_, stuck, _) = lc_with(&env, &["stuck", "--json"], &[], &[]).await;
    assert!(!stuck.contains(&name), "{stuck}");
    let (code, _, err) = lc_with(&env, &["deploy", "ack", &name], &[], &[]).await;
    assert_eq!(code, 1, "nothing left to acknowledge");
    assert!(err.contains("not leftovers"), "{err}");
    worker.stop().await;
}

/// Machine state is stored sealed with `LC_SECRET_KEY`: a worker without the key fails
/// a docker-machine deployment at once with an error that says what to set, and makes
/// nothing.
#[tokio::test]
async fn deploy_without_the_secret_key_fails_clearly_and_makes_nothing() {
    let env = TestEnv::new().await;
    let name = unique(&env, "nokey");
    let _guard = Containers(vec![name.clone()]);
    let mut worker = env.spawn_worker_process_with_env(&[], &[]);
    // The worker above has the key; replace it by one without.
    worker.signal(libc::SIGKILL);
    worker.wait(Duration::from_secs(10));
    let mut command = std::process::Command::new(lc_tests::bin("lc-worker"));
    command
        .env_remove("LC_SECRET_KEY")
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .env(
            "LC_DOCKER_MACHINE",
            env.worker_config().machines.docker_machine,
        )
        .arg("--machine-env")
        .arg(format!("STANDIN_STATE_DIR={}", env.standin_dir().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut keyless = command.spawn().unwrap();
    let id = create(&env, &machine_spec(&name, 1, 3), &[]).await;
    // Failed at the fan-out, rolled back (there was nothing to remove).
    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    let error = row.last_error.unwrap_or_default();
    assert!(error.contains("LC_SECRET_KEY is not set"), "{error}");
    let path = deployment_path(&env, id).await;
    assert_eq!(
        path,
        ["provisioning", "failed", "tearing_down", "torn_down"]
    );
    assert!(
        create_calls(&store_dir(&env, id), &format!("{name}-1")) == 0,
        "docker-machine ran without a key to keep its state"
    );
    let _ = keyless.kill();
    let _ = keyless.wait();
}

/// The stand-in's `create` or `rm` calls as they started: (command, how many of that
/// command ran at that instant, this one included, start time in seconds since the
/// epoch). See `REC/spans.log` in the stand-in's README.
fn span_starts(store: &Path) -> Vec<(String, i64, f64)> {
    std::fs::read_to_string(store.join("spans.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|span| span["event"] == "start")
        .map(|span| {
            (
                span["command"].as_str().unwrap_or_default().to_owned(),
                span["running"].as_i64().unwrap_or_default(),
                span["time"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The most calls of `command` the stand-in saw running at once, and how many started.
fn most_at_once(store: &Path, command: &str) -> (i64, usize) {
    let starts: Vec<i64> = span_starts(store)
        .into_iter()
        .filter(|(op, _, _)| op == command)
        .map(|(_, running, _)| running)
        .collect();
    (starts.iter().copied().max().unwrap_or(0), starts.len())
}

/// Forty machines of one provider account, three worker processes with room for
/// thirty jobs, the account limited to four calls at once (`max_parallel_calls`): the
/// stand-in never has more than four creates running at the same instant (it counts
/// them itself, a create killed with its worker included until it is really gone),
/// and the limit is used in full. One worker is killed with SIGKILL while it holds
/// creates: their slots come back when their leases expire, the machines are made by
/// the others, and everything finishes. The teardown's removals stay within the limit
/// too.
#[tokio::test]
async fn deploy_forty_machines_stay_within_their_account_limit_through_a_worker_kill() {
    let env = TestEnv::new().await;
    let name = unique(&env, "fleet");
    let _guard = Containers(vec![name.clone()]);
    let store = env.standin_dir();
    let args = [
        "--machine-env",
        "STANDIN_CREATE_DELAY_MS=400",
        "--concurrency",
        "10",
    ];
    let mut workers: Vec<lc_tests::WorkerProcess> = (0..3)
        .map(|_| env.spawn_worker_process_with_env(&args, &[]))
        .collect();
    let started = Instant::now();
    let spec =
        machine_spec(&name, 40, 5).replace("driver: none,", "driver: none, max_parallel_calls: 4,");
    let path = write_spec(&env, &spec);
    let (code, out, err) = lc_with(
        &env,
        &[
            "deploy",
            "create",
            path.to_str().unwrap(),
            "--no-deploy",
            "--json",
        ],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "lc deploy create failed: {err}");
    let id: Uuid = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = "machine:none";
    let inspector = env.producer().inspector();
    let limits = inspector.concurrency_limits(Some(key)).await.unwrap();
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert_eq!(limits[0].limit, Some(4), "the spec's max_parallel_calls");

    // Kill the worker holding the most creates, once a fifth of the machines is ready.
    let client = env.sql().await;
    let victim: i64 = wait_for(
        "a worker holding creates, 8 machines ready",
        Duration::from_secs(120),
        || async {
            client
                .query_opt(
                    "SELECT w.pid FROM jobs j JOIN workers w ON w.id = j.lease_owner
                     WHERE j.group_id = $1 AND j.kind = 'provision_machine' AND j.state = 'running'
                       AND (SELECT count(*) FROM machines m
                            WHERE m.deployment_id = $1 AND m.state = 'ready') >= 8
                     GROUP BY w.pid ORDER BY count(*) DESC LIMIT 1",
                    &[&id],
                )
                .await
                .unwrap()
                .map(|row| row.get(0))
        },
    )
    .await;
    let index = workers
        .iter()
        .position(|worker| i64::from(worker.pid()) == victim)
        .expect("the worker holding creates is one of ours");
    let mut killed = workers.remove(index);
    killed.signal(libc::SIGKILL);
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    killed.wait(Duration::from_secs(10));

    let kill_after = started.elapsed();
    wait_state(&env, id, "provisioned", Duration::from_secs(180)).await;
    let (most, creates) = most_at_once(&store, "create");
    println!(
        "{creates} creates, at most {most} at once (limit 4); killed after {kill_after:?}, provisioned after {:?}",
        started.elapsed()
    );
    assert!(
        most <= 4,
        "{most} creates of the account ran at once (limit 4)"
    );
    assert_eq!(most, 4, "the account's limit was never used in full");
    let expected: Vec<String> = (1..=40).map(|n| format!("{name}-{n}")).collect();
    assert_eq!(stored_machines(&env, id).await, expected);
    assert!(
        span_starts(&store)
            .iter()
            .any(|(op, _, at)| op == "create" && *at > killed_at),
        "no create started after the kill"
    );
    // The killed worker's jobs came back through their expired leases, once each. The
    // join can make the deployment `provisioned` before the last job's completion is
    // committed (completions are batched after the handler returns): wait for them.
    let jobs = job_ids(&env, id, "provision_machine").await;
    let ids: Vec<Uuid> = jobs.iter().map(|(id, _, _)| *id).collect();
    env.wait_terminal(&ids, Duration::from_secs(60)).await;
    let jobs = job_ids(&env, id, "provision_machine").await;
    assert_eq!(jobs.len(), 40);
    assert!(
        jobs.iter().all(|(_, state, _)| state == "succeeded"),
        "{jobs:?}"
    );
    let retried: Vec<Uuid> = jobs
        .iter()
        .filter(|(_, _, attempt)| *attempt > 1)
        .map(|(job, _, _)| *job)
        .collect();
    assert!(
        (1..=4).contains(&retried.len()),
        "jobs that ran more than once: {retried:?} (waiting must use no attempt)"
    );
    for job in &retried {
        let events = env.store.events(*job).await.unwrap();
        assert!(
            events.iter().any(|event| event
                .message
                .as_deref()
                .is_some_and(|message| message.contains("lease expired"))),
            "job {job} ran again without its lease expiring: {events:?}"
        );
    }
    let limits = inspector.concurrency_limits(Some(key)).await.unwrap();
    assert_eq!((limits[0].running, limits[0].waiting), (0, 0));

    // The teardown removes the forty machines within the account's limit too, and
    // uses it in full: one teardown_machine job per machine, each with the key.
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "180s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    let (most_rm, removals) = most_at_once(&store, "rm");
    println!(
        "{removals} removals, at most {most_rm} at once; torn down after {:?}",
        started.elapsed()
    );
    assert!(
        most_rm <= 4,
        "{most_rm} removals of the account ran at once"
    );
    // One removal job at a time made one rm at a time. Each job also runs a status
    // and records, so its rm calls overlap less than the jobs themselves do.
    assert!(most_rm >= 2, "the removals ran one after another");
    assert_eq!(removals, 40, "every machine removed once");
    let most_jobs = most_running_at_once(&env, id, "teardown_machine").await;
    assert_eq!(
        most_jobs, 4,
        "teardown_machine jobs running at once (limit 4)"
    );
    let removal_jobs = job_ids(&env, id, "teardown_machine").await;
    assert_eq!(removal_jobs.len(), 40, "{removal_jobs:?}");
    assert!(
        removal_jobs
            .iter()
            .all(|(_, state, _)| state == "succeeded"),
        "{removal_jobs:?}"
    );
    assert!(stored_machines(&env, id).await.is_empty());
    let (machines, _) = row_states(&env, id).await;
    assert!(
        machines.iter().all(|state| state == "removed"),
        "{machines:?}"
    );
    drop(workers);
}

/// A deployment made on a queue of its own is checked and torn down there when the
/// command names no queue: its workers may serve no other queue (with `default`, the
/// teardown would wait forever for a worker, and the machines would bill on).
#[tokio::test]
async fn deploy_check_and_teardown_follow_the_queue_the_deployment_was_made_on() {
    let env = TestEnv::new().await;
    let name = unique(&env, "own-queue");
    let _guard = Containers(vec![name.clone()]);
    let queue = format!("fleet-{}", &env.prefix[..8]);
    let mut config = env.worker_config();
    config.worker.queues = vec![queue.clone()];
    let worker = env.spawn_worker(config);
    let path = write_spec(&env, &local_spec(&name, 2));
    let (code, _, err) = lc_with(
        &env,
        &[
            "deploy",
            "create",
            path.to_str().unwrap(),
            "--queue",
            &queue,
            "--wait",
            "--timeout",
            "60s",
        ],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "lc deploy create failed: {err}");
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "check", &name, "--wait", "--timeout", "20s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "lc deploy check failed: {err}");
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "30s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "lc deploy teardown failed: {err}");
    let client = env.sql().await;
    let queues: Vec<String> = client
        .query(
            "SELECT DISTINCT j.queue FROM jobs j JOIN deployments d ON d.id = j.group_id WHERE d.name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        queues,
        vec![queue.clone()],
        "every job of the deployment on its queue"
    );
    worker.stop().await;
}
