//! Plans: `lc deploy create|update SPEC --dry-run` validates and prints what would be
//! made, changed or removed, and writes nothing anywhere: not a row, not a Redis key,
//! not a docker-machine call. The docker-machine arguments it shows are the ones the
//! worker then runs.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::expiry::table_counts;
use super::{
    Containers, calls, docker_host, lc_with, local_spec, machine_spec, store_dir, unique,
    wait_state, write_spec,
};
use lc_tests::TestEnv;

/// Every file under `dir` with its size.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            let size = entry.metadata().map(|meta| meta.len()).unwrap_or(0);
            found.push((path.display().to_string(), size));
        }
    }
    found.sort();
    found
}

/// Redis keys of this test's prefix.
async fn redis_keys(env: &TestEnv) -> Vec<String> {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// What a dry run must leave as it was: every table's row count, the stand-in's
/// records and the machines directory, the Redis keys.
#[derive(Debug, PartialEq)]
struct World {
    tables: Vec<(String, i64)>,
    standin: Vec<(String, u64)>,
    machines_dir: Vec<(String, u64)>,
    redis: Vec<String>,
}

async fn world(env: &TestEnv) -> World {
    World {
        tables: table_counts(env).await,
        standin: files(&env.standin_dir()),
        machines_dir: files(&env.worker_config().machines.machines_dir),
        redis: redis_keys(env).await,
    }
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn dry_run_create_writes_nothing_and_plans_the_calls_the_worker_makes() {
    let env = TestEnv::new().await;
    let name = unique(&env, "plan");
    let _guard = Containers(vec![name.clone()]);
    let token_var = format!("LC_PLAN_TOKEN_{}", env.prefix[1..9].to_uppercase());
    let token = format!("plan-secret-{}", env.prefix);
    let spec = machine_spec(&name, 2, 3).replace(
        "driver: none,",
        &format!("driver: none, credentials_env: [{token_var}],"),
    );
    let path = write_spec(&env, &spec);
    let path = path.to_str().unwrap();
    let before = world(&env).await;

    let (code, out, err) = lc_with(
        &env,
        &[
            "deploy",
            "create",
            path,
            "--ttl",
            "1h",
            "--dry-run",
            "--json",
        ],
        &[(&token_var, &token)],
        &[],
    )
    .await;
    assert_eq!(code, 0, "dry run failed: {err}");
    assert!(
        !out.contains(&token) && !err.contains(&token),
        "the credential leaked"
    );
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["action"], "create");
    assert_eq!(plan["deployment"], name.as_str());
    assert_eq!(plan["generation"], 1);
    assert!(plan["refused"].is_null(), "{plan}");
    assert!(plan["expires_at"].is_string(), "{plan}");
    let machines: Vec<String> = (1..=2).map(|n| format!("{name}-{n}")).collect();
    assert_eq!(names(&plan["machines"], "name"), machines);
    assert!(
        plan["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|machine| machine["change"] == "create")
    );
    assert_eq!(
        names(&plan["containers"], "name"),
        machines
            .iter()
            .map(|machine| format!("lc-{machine}-g1"))
            .collect::<Vec<_>>()
    );
    let key = format!("machine:none:{token_var}");
    let creates: Vec<&Value> = plan["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|call| call["op"] == "create")
        .collect();
    assert_eq!(creates.len(), 2, "{plan}");
    for (call, machine) in creates.iter().zip(&machines) {
        assert_eq!(call["machine"], machine.as_str());
        let args: Vec<&str> = call["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "create",
                "--driver",
                "none",
                &format!("--url={}", docker_host()),
                machine.as_str()
            ]
        );
        assert_eq!(call["env"][&token_var], "***", "{call}");
        assert_eq!(call["env"]["MACHINE_BUGSNAG_API_TOKEN"], "no-report");
        assert_eq!(call["concurrency_key"], key.as_str());
    }
    assert_eq!(plan["concurrency_keys"], serde_json::json!([key]));
    let jobs: Vec<(String, i64)> = plan["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| {
            (
                job["kind"].as_str().unwrap().to_owned(),
                job["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("provision".to_owned(), 1),
            ("provision_machine".to_owned(), 2),
            ("deploy".to_owned(), 1),
            ("teardown".to_owned(), 1)
        ]
    );
    let teardown = &plan["jobs"][3];
    assert_eq!(teardown["run_at"], plan["expires_at"]);

    // The human form says the same, credentials masked.
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "create", path, "--dry-run"],
        &[(&token_var, &token)],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&token), "the credential leaked: {out}");
    for machine in &machines {
        assert!(out.contains(machine.as_str()), "{out}");
    }
    assert!(out.contains(&format!("{token_var}=***")), "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(world(&env).await, before, "the dry run changed something");

    // The real create runs exactly the planned arguments.
    let worker = env.spawn_worker_process_with_env(&[], &[(&token_var, &token)]);
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "create", path, "--json"],
        &[(&token_var, &token)],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id: uuid::Uuid = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    let made = calls(&store_dir(&env, id));
    for (call, machine) in creates.iter().zip(&machines) {
        let (_, _, _, argv) = made
            .iter()
            .find(|(op, last, _, _)| op == "create" && last == machine)
            .unwrap();
        let start = argv.iter().position(|arg| arg == "create").unwrap();
        let planned: Vec<String> = call["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(argv[start..], planned[..], "the worker ran other arguments");
        // The global flags too, but for the scratch store's path.
        let globals: Vec<String> = call["global_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| arg.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(globals.len(), start - 1, "{argv:?}");
        for (planned, ran) in globals.iter().zip(&argv[1..start]) {
            match planned.strip_prefix("$MACHINE_STORAGE_PATH") {
                Some(tail) => assert!(ran.ends_with(tail), "{ran} vs {planned}"),
                None => assert_eq!(ran, planned),
            }
        }
    }
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "60s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    drop(worker);
}

#[tokio::test]
async fn dry_run_update_lists_the_replaced_containers_and_writes_nothing() {
    let env = TestEnv::new().await;
    let name = unique(&env, "planup");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let first = local_spec(&name, 2);
    let path = write_spec(&env, &first);
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "create", path.to_str().unwrap(), "--json"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let id: uuid::Uuid = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_state(&env, id, "deployed", Duration::from_secs(60)).await;
    worker.stop().await;

    let changed = first.replace("  network_mode:", "  env: {GREETING: hi}\n  network_mode:");
    let changed_path = write_spec(&env, &changed);
    let changed_path = changed_path.to_str().unwrap();
    let before = world(&env).await;
    let (code, out, err) = lc_with(
        &env,
        &["deploy", "update", changed_path, "--dry-run", "--json"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["action"], "update");
    assert_eq!(plan["id"], id.to_string().as_str());
    assert_eq!(plan["current_generation"], 1);
    assert_eq!(plan["generation"], 2);
    assert!(plan["refused"].is_null(), "{plan}");
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|change| change == "payload.env.GREETING"),
        "{plan}"
    );
    assert!(
        plan["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|machine| machine["change"] == "keep"),
        "{plan}"
    );
    let containers: Vec<(String, String)> = plan["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for node in 1..=2 {
        expected.push((format!("lc-{name}-{node}-g2"), "create".to_owned()));
        expected.push((format!("lc-{name}-{node}-g1"), "remove".to_owned()));
    }
    assert_eq!(containers, expected);
    assert_eq!(
        plan["calls"],
        serde_json::json!([]),
        "no docker-machine calls"
    );
    assert_eq!(plan["jobs"][0]["kind"], "deploy");

    let (code, out, err) = lc_with(
        &env,
        &["deploy", "update", changed_path, "--dry-run"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("lc-{name}-1-g2")), "{out}");
    assert!(out.contains("payload.env.GREETING"), "{out}");

    // What the update would refuse, the plan refuses, and says why.
    let more = write_spec(&env, &local_spec(&name, 3));
    let (code, out, err) = lc_with(
        &env,
        &[
            "deploy",
            "update",
            more.to_str().unwrap(),
            "--dry-run",
            "--json",
        ],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{out}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert!(
        plan["refused"].as_str().unwrap().contains("nodes"),
        "{plan}"
    );
    assert!(err.contains("nodes"), "{err}");
    let missing = write_spec(&env, &local_spec(&unique(&env, "nosuch"), 1));
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "update", missing.to_str().unwrap(), "--dry-run"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no live deployment"), "{err}");
    assert_eq!(world(&env).await, before, "the dry run changed something");

    // The update itself does what the plan said.
    let worker = env.spawn_worker(env.worker_config());
    let (code, err) = super::update_and_wait(&env, &changed).await;
    assert_eq!(code, 0, "{err}");
    let (_, rows) = super::row_states(&env, id).await;
    let mut running: Vec<String> = rows
        .iter()
        .filter(|(_, _, state)| state == "running")
        .map(|(name, _, _)| name.clone())
        .collect();
    running.sort();
    assert_eq!(
        running,
        [format!("lc-{name}-1-g2"), format!("lc-{name}-2-g2")]
    );
    super::teardown_and_check_empty(&env, id, &name).await;
    worker.stop().await;
}
