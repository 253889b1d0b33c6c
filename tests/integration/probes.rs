//! What an orchestrator uses to run `lc-worker` replicas, on real processes: the probes on
//! the metrics port (`/healthz`: the heartbeat loop turns; `/readyz`: the database and
//! Redis answer and the worker takes jobs) and `--drain` (on SIGTERM: stop claiming, finish
//! what runs however long it takes, exit).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lc_shared::{JobKind, JobState};
use lc_tests::{PrivatePostgres, PrivateRedis, TestEnv, WorkerProcess, enqueue_many, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

fn addr_file(env: &TestEnv) -> PathBuf {
    std::env::temp_dir().join(format!(
        "lc-metrics-addr-{}-{}",
        env.prefix,
        Uuid::new_v4().simple()
    ))
}

/// A worker process serving its probes on a free port; returns it and its base URL
/// (read from `--metrics-addr-file`, as a compose healthcheck does).
async fn worker_with_probes(env: &TestEnv, extra: &[&str]) -> (WorkerProcess, String) {
    let file = addr_file(env);
    let file_arg = file.display().to_string();
    let mut args = vec![
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-addr-file",
        &file_arg,
    ];
    args.extend_from_slice(extra);
    let worker = env.spawn_worker_process(&args);
    let addr = wait_for(
        "the worker to write its metrics address",
        Duration::from_secs(20),
        || async { read_addr(&file) },
    )
    .await;
    let _ = std::fs::remove_file(&file);
    (worker, format!("http://{addr}"))
}

fn read_addr(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let addr = text.trim();
    addr.parse::<std::net::SocketAddr>().ok()?;
    Some(addr.to_owned())
}

/// GET `path`: status code and JSON body (`None` when nothing answers).
async fn probe(base: &str, path: &str) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = client.get(format!("{base}{path}")).send().await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.json().await.ok()?))
}

/// Waits until `path` answers `status` with `{"status": word}`; returns the body.
async fn probe_says(base: &str, path: &str, status: u16, word: &str) -> Value {
    wait_for(
        &format!("{path} to answer {status} {word}"),
        Duration::from_secs(20),
        || async {
            let (code, body) = probe(base, path).await?;
            (code == status && body["status"] == word).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn the_probes_tell_a_live_worker_from_a_ready_one() {
    let pg = PrivatePostgres::start().await;
    let mut redis = PrivateRedis::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &redis.url()).await;
    let (worker, base) = worker_with_probes(&env, &[]).await;

    assert_eq!(
        probe_says(&base, "/healthz", 200, "ok").await,
        json!({"status": "ok"})
    );
    probe_says(&base, "/readyz", 200, "ok").await;

    // Redis gone: not ready, still alive (restarting the worker would not bring it back).
    redis.stop();
    let body = probe_says(&base, "/readyz", 503, "unavailable").await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("redis: "), "{body}");
    assert_eq!(probe(&base, "/healthz").await.unwrap().0, 200);
    redis.restart().await;
    probe_says(&base, "/readyz", 200, "ok").await;

    // The database hangs: the heartbeat loop waits on it, and once it has not come round
    // for a lease (2 s here) the worker is not alive any more; readiness gives up after 2 s.
    pg.freeze();
    let frozen = Instant::now();
    let body = probe_says(&base, "/healthz", 503, "stuck").await;
    assert!(
        frozen.elapsed() >= Duration::from_secs(1),
        "stuck after {:?}: {body}",
        frozen.elapsed()
    );
    let (code, body) = probe(&base, "/readyz").await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("database: no answer within 2s"),
        "{body}"
    );
    pg.thaw();
    probe_says(&base, "/healthz", 200, "ok").await;
    probe_says(&base, "/readyz", 200, "ok").await;
    drop(worker);
}

#[tokio::test]
async fn a_draining_worker_stops_claiming_and_exits_when_its_jobs_are_done() {
    let env = TestEnv::new().await;
    // --grace 1s: without --drain, the 4 s jobs would be stopped and handed back.
    let (mut worker, base) =
        worker_with_probes(&env, &["--drain", "--grace", "1s", "--concurrency", "4"]).await;
    let long = enqueue_many(&env, JobKind::Sleep, json!({"ms": 4000, "record": true}), 2).await;
    wait_for("both jobs to run", Duration::from_secs(20), || async {
        let states = env.states(&long).await;
        states
            .values()
            .all(|state| *state == JobState::Running)
            .then_some(())
    })
    .await;

    worker.signal(libc::SIGTERM);
    let signalled = Instant::now();
    probe_says(&base, "/readyz", 503, "stopping").await;
    assert_eq!(probe(&base, "/healthz").await.unwrap().0, 200);
    // Work that arrives while it drains is not its own any more.
    let later = enqueue_many(&env, JobKind::Noop, json!({}), 3).await;

    let (code, log) = tokio::task::spawn_blocking(move || {
        let code = worker.wait(Duration::from_secs(30));
        (code, worker.log_text())
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "the worker exits cleanly:\n{log}");
    assert!(log.contains("draining"), "{log}");
    assert!(
        took >= Duration::from_secs(2),
        "it waited for the jobs past --grace (exited after {took:?})"
    );
    // Both finished on their first attempt: nothing was handed back or run again.
    let states = env.states(&long).await;
    assert!(
        states.values().all(|state| *state == JobState::Succeeded),
        "{states:?}"
    );
    let client = env.sql().await;
    let events = client
        .query_one(
            "SELECT count(*) FROM job_events WHERE job_id = ANY($1) AND message = 'released on shutdown'",
            &[&long],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(events, 0, "a draining worker hands nothing back");
    env.assert_exactly_once(&long).await;
    let later_states = env.states(&later).await;
    assert!(
        later_states
            .values()
            .all(|state| *state == JobState::Queued),
        "jobs enqueued during the drain wait for another worker: {later_states:?}"
    );
}
