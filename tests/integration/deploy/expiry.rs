//! Expiry: a deployment made with a `ttl` (or `expires_at`) is torn down by a delayed
//! teardown job written with it, also when every worker was down at the moment of
//! expiry; `lc deploy extend` moves that job; a teardown by hand and the expiry never
//! fight; bad input is refused before anything is written.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Containers, calls, containers_of, deployment, lc_with, local_spec, machine_spec, row_states,
    store_dir, stored_machines, unique, wait_state, write_spec,
};
use lc_tests::{TestEnv, wait_for};

/// `lc deploy create SPEC --json` plus `args`; returns (id, expires_at).
async fn create_with(env: &TestEnv, spec: &str, args: &[&str]) -> (Uuid, Option<DateTime<Utc>>) {
    let path = write_spec(env, spec);
    let mut argv = vec!["deploy", "create", path.to_str().unwrap(), "--json"];
    argv.extend_from_slice(args);
    let (code, out, err) = lc_with(env, &argv, &[], &[]).await;
    assert_eq!(code, 0, "lc deploy create failed: {err}");
    let value: Value = serde_json::from_str(&out).unwrap();
    let expires_at = value["expires_at"]
        .as_str()
        .map(|text| text.parse().unwrap());
    (value["id"].as_str().unwrap().parse().unwrap(), expires_at)
}

/// The deployment's teardown jobs: (id, state, run_at, idempotency key, started_at),
/// oldest first.
async fn teardown_jobs(
    env: &TestEnv,
    id: Uuid,
) -> Vec<(
    Uuid,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<DateTime<Utc>>,
)> {
    env.sql()
        .await
        .query(
            "SELECT id, state, run_at, idempotency_key, started_at FROM jobs
             WHERE group_id = $1 AND kind = 'teardown' ORDER BY created_at",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

async fn expiry_of(env: &TestEnv, id: Uuid) -> (Option<DateTime<Utc>>, i64) {
    let row = env
        .sql()
        .await
        .query_one(
            "SELECT expires_at, expiry_generation FROM deployments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn database_now(env: &TestEnv) -> DateTime<Utc> {
    env.sql()
        .await
        .query_one("SELECT now()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits (by the database's clock) until `at` has passed.
async fn wait_until(env: &TestEnv, at: DateTime<Utc>, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        (database_now(env).await > at).then_some(())
    })
    .await;
}

/// Row counts of every table of the test's database.
pub(super) async fn table_counts(env: &TestEnv) -> Vec<(String, i64)> {
    let client = env.sql().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        counts.push((table, count));
    }
    counts
}

/// Everything a deployment left: container rows, machine rows and stand-in entries.
async fn assert_nothing_left(env: &TestEnv, id: Uuid) {
    assert!(
        containers_of(id).is_empty(),
        "containers left: {:?}",
        containers_of(id)
    );
    assert!(
        stored_machines(env, id).await.is_empty(),
        "machine state left: {:?}",
        stored_machines(env, id).await
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

#[tokio::test]
async fn a_deployment_with_a_ttl_is_torn_down_by_itself() {
    let env = TestEnv::new().await;
    let name = unique(&env, "ttl");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let before = database_now(&env).await;
    let (id, expires_at) = create_with(&env, &machine_spec(&name, 2, 3), &["--ttl", "3s"]).await;
    let after = database_now(&env).await;
    let expires_at = expires_at.expect("create --json names the expiry");
    // The database's time of the create plus the TTL.
    assert!(
        expires_at >= before + chrono::Duration::seconds(3)
            && expires_at <= after + chrono::Duration::seconds(3),
        "expires_at {expires_at} is not the create's time plus 3s ({before} .. {after})"
    );
    assert_eq!(expiry_of(&env, id).await, (Some(expires_at), 1));
    // The delayed teardown was written with the deployment.
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].2, expires_at, "the teardown runs at the expiry");
    assert_eq!(
        jobs[0].3.as_deref(),
        Some(format!("teardown-expiry:{id}:1").as_str())
    );
    // `ls` says how long is left, `show` when it ends.
    let (code, out, _) = lc_with(&env, &["deploy", "ls"], &[], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("EXPIRES"), "{out}");
    let line = out.lines().find(|line| line.contains(&name)).unwrap();
    assert!(line.contains("in ") || line.contains("expired"), "{line}");
    let (code, out, _) = lc_with(&env, &["deploy", "ls", "--json"], &[], &[]).await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert!(listed[0]["expires_in_secs"].as_f64().is_some(), "{listed}");
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name], &[], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("expires"), "{out}");
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name, "--json"], &[], &[]).await;
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["deployment"]["expires_at"]
            .as_str()
            .map(|text| text.parse::<DateTime<Utc>>().unwrap()),
        Some(expires_at)
    );

    let row = wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    println!("state path: {:?}", super::deployment_path(&env, id).await);
    assert!(row.last_error.is_none(), "{:?}", row.last_error);
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 1, "one teardown, the expiry's: {jobs:?}");
    assert_eq!(jobs[0].1, "succeeded");
    let started = jobs[0].4.expect("the teardown started");
    // Within a sweep interval (200 ms here) of the expiry, with room for a busy machine.
    assert!(
        started >= expires_at && started - expires_at < chrono::Duration::milliseconds(1500),
        "teardown started at {started}, expiry {expires_at}"
    );
    assert_nothing_left(&env, id).await;
    let store = store_dir(&env, id);
    for node in 1..=2 {
        let machine = format!("{name}-{node}");
        assert!(
            calls(&store)
                .iter()
                .any(|(op, last, _, _)| op == "rm" && *last == machine),
            "{machine} was not removed with docker-machine rm"
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn a_deployment_expiring_while_every_worker_is_down_is_torn_down_when_one_comes_back() {
    let env = TestEnv::new().await;
    let name = unique(&env, "down");
    let _guard = Containers(vec![name.clone()]);
    let first = env.spawn_worker_process(&[]);
    let second = env.spawn_worker_process(&[]);
    let (id, expires_at) = create_with(&env, &machine_spec(&name, 2, 3), &["--ttl", "3s"]).await;
    let expires_at = expires_at.unwrap();
    // Kill every worker before the expiry: once deployed, or at the latest half a
    // second before it.
    wait_for(
        "the deployment to be deployed, or its expiry to be near",
        Duration::from_secs(30),
        || async {
            let deployed = deployment(&env, id).await.state == "deployed";
            let near = database_now(&env).await + chrono::Duration::milliseconds(500) > expires_at;
            (deployed || near).then_some(())
        },
    )
    .await;
    first.signal(libc::SIGKILL);
    second.signal(libc::SIGKILL);
    assert!(
        database_now(&env).await < expires_at,
        "the workers were killed after the expiry"
    );
    let state_at_kill = deployment(&env, id).await.state;
    println!("killed every worker with the deployment {state_at_kill}");
    drop(first);
    drop(second);
    // Past the expiry with nobody there: nothing happened.
    wait_until(
        &env,
        expires_at + chrono::Duration::seconds(2),
        "the expiry to pass",
    )
    .await;
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        jobs[0].1, "queued",
        "the delayed teardown waits for a worker"
    );
    assert_eq!(deployment(&env, id).await.state, state_at_kill);

    let back = database_now(&env).await;
    let worker = env.spawn_worker_process(&[]);
    wait_state(&env, id, "torn_down", Duration::from_secs(90)).await;
    let jobs = teardown_jobs(&env, id).await;
    let started = jobs[0].4.expect("the teardown started");
    println!(
        "worker back at {back}, expiry teardown started {} ms later",
        (started - back).num_milliseconds()
    );
    assert!(
        started - back < chrono::Duration::seconds(10),
        "the due teardown waited {} ms after a worker came back",
        (started - back).num_milliseconds()
    );
    assert_nothing_left(&env, id).await;
    drop(worker);
}

#[tokio::test]
async fn extend_moves_the_teardown() {
    let env = TestEnv::new().await;
    let name = unique(&env, "ext");
    let _guard = Containers(vec![name.clone()]);
    let worker = env.spawn_worker(env.worker_config());
    let (id, old) = create_with(&env, &local_spec(&name, 1), &["--ttl", "3s"]).await;
    let old = old.unwrap();
    let (code, out, err) =
        lc_with(&env, &["deploy", "extend", &name, "4s", "--json"], &[], &[]).await;
    assert_eq!(code, 0, "lc deploy extend failed: {err}");
    let extended: Value = serde_json::from_str(&out).unwrap();
    let new: DateTime<Utc> = extended["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(new, old + chrono::Duration::seconds(4));
    assert_eq!(expiry_of(&env, id).await, (Some(new), 2));
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(
        jobs[0].1, "cancelled",
        "the old delayed teardown is cancelled"
    );
    assert_eq!(jobs[1].1, "queued");
    assert_eq!(jobs[1].2, new, "the new one runs at the new expiry");
    assert_eq!(
        extended["teardown_job"].as_str(),
        Some(jobs[1].0.to_string().as_str())
    );
    assert_eq!(
        jobs[1].3.as_deref(),
        Some(format!("teardown-expiry:{id}:2").as_str())
    );
    // The human form says when.
    let (code, out, _) = lc_with(&env, &["deploy", "show", &name], &[], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("expires"), "{out}");

    // Well past the old time, still there.
    wait_until(
        &env,
        old + chrono::Duration::milliseconds(2000),
        "the old expiry to pass",
    )
    .await;
    let state = deployment(&env, id).await.state;
    assert!(
        state != "tearing_down" && state != "torn_down",
        "torn down at the old expiry: {state}"
    );
    assert!(
        teardown_jobs(&env, id)
            .await
            .iter()
            .all(|job| job.4.is_none())
    );

    wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs[1].1, "succeeded");
    assert!(jobs[1].4.unwrap() >= new, "torn down before the new expiry");
    assert_nothing_left(&env, id).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_teardown_by_hand_and_the_expiry_never_fight() {
    let env = TestEnv::new().await;
    let early = unique(&env, "hand");
    let late = unique(&env, "hang");
    let _guard = Containers(vec![early.clone(), late.clone()]);
    // docker-machine rm of the second deployment's machines hangs until released.
    let hang = format!("STANDIN_FAIL_MATCH=^{late}-");
    let worker = env.spawn_worker(super::config_with(&env, &["STANDIN_HANG=rm", &hang]));

    // Torn down by hand before its expiry: the expiry finds it torn down and does nothing.
    let (id, expires_at) = create_with(&env, &machine_spec(&early, 1, 3), &["--ttl", "4s"]).await;
    let expires_at = expires_at.unwrap();
    let (code, _, err) = lc_with(
        &env,
        &["deploy", "teardown", &early, "--wait", "--timeout", "60s"],
        &[],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");
    assert!(
        database_now(&env).await < expires_at,
        "the teardown took past the expiry"
    );
    let store = store_dir(&env, id);
    let calls_before = calls(&store).len();
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 2, "the expiry's and the operator's: {jobs:?}");
    let expiry_job = jobs
        .iter()
        .find(|job| job.3.as_deref() == Some(format!("teardown-expiry:{id}:1").as_str()))
        .unwrap()
        .0;
    let states = env
        .wait_terminal(&[expiry_job], Duration::from_secs(30))
        .await;
    assert_eq!(states[&expiry_job], lc_shared::JobState::Succeeded);
    assert_eq!(
        calls(&store).len(),
        calls_before,
        "the expiry ran docker-machine"
    );
    let events = env.store.events(expiry_job).await.unwrap();
    assert!(
        events.iter().any(|event| event
            .message
            .as_deref()
            .unwrap_or("")
            .contains("torn down already")),
        "{events:?}"
    );
    assert_eq!(deployment(&env, id).await.state, "torn_down");

    // Expired, and its teardown hangs in docker-machine rm: a teardown by hand finds it.
    let (id, _) = create_with(&env, &machine_spec(&late, 1, 3), &["--ttl", "3s"]).await;
    let store = store_dir(&env, id);
    wait_for(
        "the expiry's rm to hang",
        Duration::from_secs(60),
        || async {
            calls(&store)
                .iter()
                .any(|(op, last, _, _)| op == "rm" && *last == format!("{late}-1"))
                .then_some(())
        },
    )
    .await;
    let (code, out, err) = lc_with(&env, &["deploy", "teardown", &late, "--json"], &[], &[]).await;
    assert_eq!(code, 0, "{err}");
    let requested: Value = serde_json::from_str(&out).unwrap();
    let jobs = teardown_jobs(&env, id).await;
    assert_eq!(jobs.len(), 1, "a second teardown was made: {jobs:?}");
    assert_eq!(
        requested["teardown_job"].as_str(),
        Some(jobs[0].0.to_string().as_str())
    );
    let child = std::fs::read_to_string(env.standin_dir().join("hang-child.pid")).unwrap();
    lc_tests::unsafe_free_kill(child.trim().parse().unwrap(), libc::SIGKILL);
    wait_state(&env, id, "torn_down", Duration::from_secs(60)).await;
    assert_eq!(teardown_jobs(&env, id).await.len(), 1);
    assert_nothing_left(&env, id).await;
    worker.stop().await;
}

#[tokio::test]
async fn bad_expiry_input_is_refused_and_nothing_is_written() {
    let env = TestEnv::new().await;
    let name = unique(&env, "badttl");
    let spec = local_spec(&name, 1);
    let future = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (spec.clone(), vec!["--ttl", "0s"], vec!["ttl", "more than"]),
        (spec.clone(), vec!["--ttl", "banana"], vec!["ttl", "banana"]),
        (format!("{spec}ttl: 0s\n"), vec![], vec!["ttl"]),
        (format!("{spec}ttl: soon\n"), vec![], vec!["ttl", "soon"]),
        (
            format!("{spec}expires_at: '2001-01-01T00:00:00Z'\n"),
            vec![],
            vec!["expires_at", "past"],
        ),
        (
            format!("{spec}expires_at: tomorrow\n"),
            vec![],
            vec!["expires_at", "RFC 3339"],
        ),
        (
            format!("{spec}ttl: 1h\nexpires_at: '{future}'\n"),
            vec![],
            vec!["ttl", "expires_at"],
        ),
        (
            format!("{spec}expires_at: '{future}'\n"),
            vec!["--ttl", "1h"],
            vec!["ttl", "expires_at"],
        ),
        // A dry run refuses the same.
        (spec.clone(), vec!["--ttl", "0s", "--dry-run"], vec!["ttl"]),
        (
            format!("{spec}expires_at: '2001-01-01T00:00:00Z'\n"),
            vec!["--dry-run"],
            vec!["expires_at", "past"],
        ),
    ];
    for (text, args, expected) in &cases {
        let path = write_spec(&env, text);
        let mut argv = vec!["deploy", "create", path.to_str().unwrap()];
        argv.extend_from_slice(args);
        let (code, out, err) = lc_with(&env, &argv, &[], &[]).await;
        assert_eq!(
            code, 1,
            "expected a refusal for {args:?}:\n{text}\nstdout: {out}"
        );
        assert!(err.starts_with("error: "), "{err}");
        for word in expected {
            assert!(
                err.contains(word),
                "error for {args:?} lacks {word:?}: {err}\n{text}"
            );
        }
    }
    for (table, count) in table_counts(&env).await {
        if table != "schema_migrations" {
            assert_eq!(count, 0, "{table} has rows after refused specs");
        }
    }

    // Bad extensions change nothing.
    let (id, expires_at) = create_with(&env, &spec, &["--ttl", "1h", "--no-deploy"]).await;
    let plain = unique(&env, "plain");
    create_with(&env, &local_spec(&plain, 1), &["--no-deploy"]).await;
    let before = table_counts(&env).await;
    // (arguments, exit code: 2 for a usage error, expected text)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![name.as_str(), "0s"], 1, "more than"),
        (vec![name.as_str(), "banana"], 2, "banana"),
        (vec!["nosuchdeployment", "1h"], 1, "no deployment"),
        (vec![plain.as_str(), "1h"], 1, "no expiry"),
    ];
    for (args, want, expected) in &cases {
        let mut argv = vec!["deploy", "extend"];
        argv.extend_from_slice(args);
        let (code, _, err) = lc_with(&env, &argv, &[], &[]).await;
        assert_eq!(code, *want, "expected a refusal for {args:?}: {err}");
        assert!(
            err.contains(expected),
            "error for {args:?} lacks {expected:?}: {err}"
        );
    }
    assert_eq!(table_counts(&env).await, before);
    assert_eq!(expiry_of(&env, id).await, (expires_at, 1));
}
