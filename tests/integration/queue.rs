//! The queue core: enqueue, priorities, idempotency, transactional enqueue, retries,
//! cancellation, delayed jobs, bad input, the inbox stream, migrations.

use std::time::Duration;

use chrono::Utc;
use lc_shared::store::CancelOutcome;
use lc_shared::{JobKind, JobState, NewJob, Priority};
use lc_tests::{TestEnv, enqueue_many, wait_for};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn jobs_run_once_and_record_their_history() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 10, "record": true}), 50).await;
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    let events = env.store.events(ids[0]).await.unwrap();
    let changes: Vec<_> = events.iter().filter_map(|event| event.to_state).collect();
    assert_eq!(changes, ["queued", "running", "succeeded"]);
    worker.stop().await;
}

#[tokio::test]
async fn higher_priority_runs_first() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let mut low = Vec::new();
    let mut high = Vec::new();
    for _ in 0..10 {
        low.push(
            producer
                .enqueue(NewJob::new(JobKind::Noop, json!({})).with_priority(Priority::Low))
                .await
                .unwrap()
                .id,
        );
    }
    for _ in 0..10 {
        high.push(
            producer
                .enqueue(NewJob::new(JobKind::Noop, json!({})).with_priority(Priority::High))
                .await
                .unwrap()
                .id,
        );
    }
    // Every hint in Redis before the worker starts, so the order is the queue's.
    producer.flush_hints().await;
    let mut config = env.worker_config();
    config.concurrency = 1;
    let worker = env.spawn_worker(config);
    let all: Vec<Uuid> = low.iter().chain(&high).copied().collect();
    env.wait_terminal(&all, Duration::from_secs(30)).await;
    worker.stop().await;
    let client = env.sql().await;
    let last_high: chrono::DateTime<Utc> = client
        .query_one(
            "SELECT max(started_at) FROM jobs WHERE id = ANY($1)",
            &[&high],
        )
        .await
        .unwrap()
        .get(0);
    let first_low: chrono::DateTime<Utc> = client
        .query_one(
            "SELECT min(started_at) FROM jobs WHERE id = ANY($1)",
            &[&low],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        last_high <= first_low,
        "a low-priority job started before the last high one"
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_existing_job() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let job = NewJob::new(JobKind::Noop, json!({})).with_idempotency_key("order-42");
    let first = producer.enqueue(job.clone()).await.unwrap();
    let second = producer.enqueue(job.clone()).await.unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.id, second.id);
    // The same key inside one batch, and again across batches: still one job.
    let batch = producer.enqueue_batch(&[job.clone(), job]).await.unwrap();
    assert!(
        batch
            .iter()
            .all(|enqueued| enqueued.id == first.id && !enqueued.created)
    );
    assert_eq!(env.job_count().await, 1);
    // The CLI says so too.
    let (code, out, _) = env.lc(&["enqueue", "noop", "--idempotency-key", "order-42"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&first.id.to_string()) && out.contains("already enqueued"),
        "{out}"
    );
}

#[tokio::test]
async fn transactional_enqueue_commits_or_vanishes_with_the_caller() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let jobs = [NewJob::new(JobKind::Noop, json!({}))];

    let mut client = env.store.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let rolled_back = env
        .producer()
        .enqueue_in_transaction(&tx, &jobs)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(env.store.job(rolled_back[0].id).await.unwrap().is_none());

    let tx = client.transaction().await.unwrap();
    let committed = env
        .producer()
        .enqueue_in_transaction(&tx, &jobs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // No notify: the sweeper dispatches jobs enqueued in a caller's transaction.
    let states = env
        .wait_terminal(&[committed[0].id], Duration::from_secs(10))
        .await;
    assert_eq!(states[&committed[0].id], JobState::Succeeded);

    let tx = client.transaction().await.unwrap();
    let notified = env
        .producer()
        .enqueue_in_transaction(&tx, &jobs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    env.producer().notify(&notified).await;
    env.wait_terminal(&[notified[0].id], Duration::from_secs(10))
        .await;
    assert_eq!(env.job_count().await, 2);
    worker.stop().await;
}

/// A producer that replaces a delayed job cancels the old one in its own transaction:
/// cancelled if and only if it commits; a job no longer queued is left alone.
#[tokio::test]
async fn queued_jobs_are_cancelled_inside_a_callers_transaction() {
    let env = TestEnv::new().await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let delayed = env
        .producer()
        .enqueue(NewJob::new(JobKind::Noop, json!({})).with_run_at(later))
        .await
        .unwrap();
    let done = enqueue_many(&env, JobKind::Noop, json!({}), 1).await;
    let worker = env.spawn_worker(env.worker_config());
    env.wait_terminal(&done, Duration::from_secs(10)).await;
    worker.stop().await;
    let ids = [delayed.id, done[0]];

    let mut client = env.store.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let cancelled = lc_shared::store::cancel_queued_in_transaction(&tx, &ids, "replaced")
        .await
        .unwrap();
    assert_eq!(cancelled, [delayed.id]);
    tx.rollback().await.unwrap();
    assert_eq!(env.states(&ids).await[&delayed.id], JobState::Queued);

    let tx = client.transaction().await.unwrap();
    let cancelled = lc_shared::store::cancel_queued_in_transaction(&tx, &ids, "replaced")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(cancelled, [delayed.id]);
    let states = env.states(&ids).await;
    assert_eq!(states[&delayed.id], JobState::Cancelled);
    assert_eq!(states[&done[0]], JobState::Succeeded);
    let events = env.store.events(delayed.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.to_state, Some(JobState::Cancelled));
    assert!(
        last.message.as_deref().unwrap_or("").contains("replaced"),
        "{last:?}"
    );
}

#[tokio::test]
async fn retries_back_off_then_die_and_fatal_errors_die_at_once() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let producer = env.producer();
    let flaky = producer
        .enqueue(NewJob::new(JobKind::Sleep, json!({"fail_times": 2})).with_max_attempts(3))
        .await
        .unwrap()
        .id;
    let doomed = producer
        .enqueue(NewJob::new(JobKind::Sleep, json!({"fail_times": 10})).with_max_attempts(3))
        .await
        .unwrap()
        .id;
    let fatal = producer
        .enqueue(
            NewJob::new(JobKind::Sleep, json!({"fail_times": 1, "fatal": true}))
                .with_max_attempts(5),
        )
        .await
        .unwrap()
        .id;
    let states = env
        .wait_terminal(&[flaky, doomed, fatal], Duration::from_secs(30))
        .await;
    assert_eq!(states[&flaky], JobState::Succeeded);
    assert_eq!(states[&doomed], JobState::Dead);
    assert_eq!(states[&fatal], JobState::Dead);

    let doomed_row = env.store.job(doomed).await.unwrap().unwrap();
    assert_eq!(doomed_row.attempt, 3);
    assert!(doomed_row.last_error.unwrap().contains("induced failure 3"));
    let fatal_row = env.store.job(fatal).await.unwrap().unwrap();
    assert_eq!(fatal_row.attempt, 1, "a fatal error must not be retried");

    // Backoff: each retry waited at least half the base delay, growing.
    let events = env.store.events(flaky).await.unwrap();
    let claims: Vec<_> = events
        .iter()
        .filter(|e| e.to_state == Some(lc_shared::JobState::Running))
        .map(|e| e.at)
        .collect();
    let retries: Vec<_> = events
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("retry scheduled"))
        })
        .map(|e| e.at)
        .collect();
    assert_eq!(claims.len(), 3);
    assert_eq!(retries.len(), 2);
    let first_wait = claims[1] - retries[0];
    let second_wait = claims[2] - retries[1];
    assert!(
        first_wait >= chrono::Duration::milliseconds(50),
        "first retry after {first_wait}"
    );
    assert!(
        second_wait >= chrono::Duration::milliseconds(100),
        "second retry after {second_wait}"
    );
    env.assert_exactly_once(&[flaky, doomed, fatal]).await;
    worker.stop().await;
}

#[tokio::test]
async fn cancel_queued_and_running_jobs() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let delayed = producer
        .enqueue(
            NewJob::new(JobKind::Noop, json!({}))
                .with_run_at(Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap()
        .id;
    assert_eq!(
        producer.cancel(delayed).await.unwrap(),
        CancelOutcome::Cancelled {
            was: JobState::Queued
        }
    );
    assert_eq!(
        producer.cancel(delayed).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
    assert_eq!(
        producer.cancel(Uuid::new_v4()).await.unwrap(),
        CancelOutcome::NotFound
    );

    let worker = env.spawn_worker(env.worker_config());
    let long = producer
        .enqueue(NewJob::new(
            JobKind::Sleep,
            json!({"ms": 60_000, "record": true}),
        ))
        .await
        .unwrap()
        .id;
    wait_for("the long job to start", Duration::from_secs(10), || async {
        (env.states(&[long]).await[&long] == JobState::Running).then_some(())
    })
    .await;
    let (code, out, err) = env.lc(&["jobs", "cancel", &long.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    // The worker notices at its next heartbeat and stops the handler: the job is free
    // of its lease and no other transition follows.
    wait_for("the worker to drop the cancelled job", Duration::from_secs(5), || async {
        let job = env.store.job(long).await.unwrap().unwrap();
        let running: i64 = env
            .sql()
            .await
            .query_one("SELECT count(*) FROM workers w WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.lease_owner = w.id)", &[])
            .await
            .unwrap()
            .get(0);
        (job.state == "cancelled" && running == 0).then_some(())
    })
    .await;
    worker.stop().await;
    env.assert_exactly_once(&[delayed, long]).await;
    let effects: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM job_effects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(effects, 0, "a cancelled sleep must not finish its work");
}

#[tokio::test]
async fn delayed_jobs_wait_for_their_time() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let run_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let id = env
        .producer()
        .enqueue(NewJob::new(JobKind::Noop, json!({})).with_run_at(run_at))
        .await
        .unwrap()
        .id;
    env.wait_terminal(&[id], Duration::from_secs(15)).await;
    let job = env.store.job(id).await.unwrap().unwrap();
    assert!(job.started_at.unwrap() >= run_at, "started before its time");
    // The CLI's --delay goes the same way.
    let (code, out, _) = env.lc(&["enqueue", "noop", "--delay", "300ms", "--json"]);
    assert_eq!(code, 0);
    let id: Uuid = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    env.wait_terminal(&[id], Duration::from_secs(15)).await;
    worker.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    let env = TestEnv::new().await;
    // A single argument cannot hold 300 KiB, so the oversized payload comes from a file.
    let big_file = std::env::temp_dir().join(format!("lc-big-{}.json", env.prefix));
    std::fs::write(
        &big_file,
        format!("{{\"ms\": 1, \"pad\": \"{}\"}}", "x".repeat(300 * 1024)),
    )
    .unwrap();
    let big = format!("@{}", big_file.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["enqueue", "frobnicate"], "unknown job kind"),
        (
            vec!["enqueue", "noop", "--payload", "{not json"],
            "not valid JSON",
        ),
        (
            vec!["enqueue", "noop", "--payload", "[1,2]"],
            "must be a JSON object",
        ),
        (
            vec!["enqueue", "sleep", "--payload", &big],
            "over the 262144 byte limit",
        ),
        (
            vec!["enqueue", "noop", "--queue", "Bad Queue!"],
            "invalid queue name",
        ),
        (
            vec!["enqueue", "noop", "--priority", "urgent"],
            "invalid priority",
        ),
        (
            vec!["enqueue", "noop", "--max-attempts", "0"],
            "max_attempts must be between",
        ),
        (
            vec!["enqueue", "sleep", "--payload", "{\"ms\": \"soon\"}"],
            "invalid payload for sleep",
        ),
    ];
    for (args, expected) in cases {
        let (code, out, err) = env.lc(&args);
        assert_eq!(code, 1, "{args:?} should fail: {out}{err}");
        assert!(
            err.contains(expected),
            "{args:?}: expected {expected:?} in {err:?}"
        );
    }
    assert_eq!(env.job_count().await, 0, "refused input must write nothing");
    // The library refuses the same way, and a bad job in a batch stops the whole batch.
    let batch = [
        NewJob::new(JobKind::Noop, json!({})),
        NewJob::new(JobKind::Noop, json!({})).with_queue("no spaces allowed"),
    ];
    assert!(env.producer().enqueue_batch(&batch).await.is_err());
    assert_eq!(env.job_count().await, 0);
}

#[tokio::test]
async fn malformed_and_duplicate_hints_are_harmless() {
    let env = TestEnv::new().await;
    // Jobs enqueued with hints, then the same hints pushed again, plus garbage.
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 5, "record": true}), 20).await;
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = env.queue.ready_key("default", Priority::Normal);
    for id in &ids {
        for _ in 0..3 {
            redis::cmd("LPUSH")
                .arg(&key)
                .arg(id.to_string())
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        }
    }
    for garbage in ["not-a-uuid", "", "{\"id\": 1}", "\u{0}\u{1}binary"] {
        redis::cmd("LPUSH")
            .arg(&key)
            .arg(garbage)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    let worker = env.spawn_worker(env.worker_config());
    env.wait_terminal(&ids, Duration::from_secs(30)).await;
    // Every hint is consumed, the worker is still running and takes new work.
    wait_for(
        "the hint lists to drain",
        Duration::from_secs(10),
        || async { (env.queue.ready_len("default").await.unwrap() == 0).then_some(()) },
    )
    .await;
    let later = enqueue_many(&env, JobKind::Noop, json!({}), 1).await;
    env.wait_terminal(&later, Duration::from_secs(10)).await;
    worker.stop().await;
    env.assert_exactly_once(&ids).await;
    let claims: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM job_events WHERE to_state = 'running' AND job_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        claims, 20,
        "each job must be claimed exactly once despite 4 hints each"
    );
}

#[tokio::test]
async fn inbox_messages_become_jobs_once_and_bad_ones_are_kept_with_a_reason() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let good = r#"{"kind":"sleep","payload":{"ms":1,"record":true},"queue":"default","priority":"high","max_attempts":3,"idempotency_key":"inbox-test-1"}"#;
    env.queue.add_inbox(good).await.unwrap();
    env.queue.add_inbox(good).await.unwrap(); // the same message twice: one job
    env.queue.add_inbox(r#"{"kind":"noop"}"#).await.unwrap();
    let bad = [
        ("{not json", "invalid JSON"),
        (r#"{"kind":"launch-missiles"}"#, "unknown job kind"),
        (r#"{"kind":"noop","queue":"NO"}"#, "invalid queue name"),
        (r#"{"kind":"noop","priority":"asap"}"#, "invalid priority"),
    ];
    for (body, _) in bad {
        env.queue.add_inbox(body).await.unwrap();
    }
    let oversized = format!(
        r#"{{"kind":"noop","payload":{{"pad":"{}"}}}}"#,
        "y".repeat(300 * 1024)
    );
    env.queue.add_inbox(&oversized).await.unwrap();

    let ids: Vec<Uuid> = wait_for(
        "two jobs from the inbox",
        Duration::from_secs(15),
        || async {
            let rows = env
                .sql()
                .await
                .query("SELECT id FROM jobs", &[])
                .await
                .unwrap();
            (rows.len() == 2).then(|| rows.iter().map(|row| row.get(0)).collect())
        },
    )
    .await;
    env.wait_terminal(&ids, Duration::from_secs(15)).await;
    let letters = wait_for("five dead letters", Duration::from_secs(10), || async {
        let letters = env.queue.dead_letters(100).await.unwrap();
        (letters.len() == 5).then_some(letters)
    })
    .await;
    for (_, reason) in bad {
        assert!(
            letters.iter().any(|letter| letter.reason.contains(reason)),
            "no dead letter says {reason:?}"
        );
    }
    assert!(
        letters
            .iter()
            .any(|letter| letter.reason.contains("byte limit"))
    );
    let (code, out, _) = env.lc(&["dead-letters"]);
    assert_eq!(code, 0);
    assert!(out.contains("unknown job kind"), "{out}");
    // Nothing left pending, and the worker still works.
    let later = enqueue_many(&env, JobKind::Noop, json!({}), 1).await;
    env.wait_terminal(&later, Duration::from_secs(10)).await;
    worker.stop().await;
    env.assert_exactly_once(&ids).await;
}

#[tokio::test]
async fn migrations_are_safe_to_run_concurrently() {
    let env = TestEnv::new().await;
    // The env already migrated once; four more at the same time must all succeed.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let store = lc_shared::store::Store::connect(&env.database_url, 2).unwrap();
            tokio::spawn(async move { lc_shared::migrate::run(&store).await })
        })
        .collect();
    for run in runs {
        let report = run.await.unwrap().unwrap();
        assert!(report.applied.is_empty());
    }
    // And on an empty database, concurrently from the start.
    let fresh = format!("{}_fresh", env.db_name);
    env.sql()
        .await
        .batch_execute(&format!("CREATE DATABASE {fresh}"))
        .await
        .unwrap();
    let url = format!("{}_fresh", env.database_url);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let store = lc_shared::store::Store::connect(&url, 2).unwrap();
            tokio::spawn(async move { lc_shared::migrate::run(&store).await })
        })
        .collect();
    let mut applied = 0;
    for run in runs {
        applied += run.await.unwrap().unwrap().applied.len();
    }
    let total: usize = lc_shared::migrate::MIGRATIONS
        .iter()
        .map(|(_, sql)| lc_shared::migrate::statements(sql).len())
        .sum();
    assert!(applied >= total, "every statement applied at least once");
    let recorded: i64 = lc_tests::deadpool_like::connect(&url)
        .await
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded as usize, total);
}

#[tokio::test]
async fn a_paused_queue_is_not_taken_from() {
    let env = TestEnv::new().await;
    env.store.set_queue_paused("default", true).await.unwrap();
    let worker = env.spawn_worker(env.worker_config());
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 5).await;
    // Two heartbeats and several poll rounds later, nothing has started.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        env.states(&ids)
            .await
            .values()
            .all(|state| *state == JobState::Queued)
    );
    let (code, _, _) = env.lc(&["queues", "resume", "default"]);
    assert_eq!(code, 0);
    env.wait_terminal(&ids, Duration::from_secs(15)).await;
    worker.stop().await;
}

#[tokio::test]
async fn finished_jobs_hold_their_slot_until_their_result_is_committed() {
    let env = TestEnv::new().await;
    let mut config = env.worker_config();
    config.concurrency = 5;
    let ids = enqueue_many(&env, JobKind::Noop, json!({"record": true}), 2000).await;
    let worker = env.spawn_worker(config);
    let client = env.sql().await;
    let mut most_running = 0;
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'succeeded') FROM jobs",
                &[],
            )
            .await
            .unwrap();
        let (running, done): (i64, i64) = (row.get(0), row.get(1));
        most_running = most_running.max(running);
        if done == 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.stop().await;
    // Never more held than the worker's bound (running, plus finished jobs waiting for
    // their commit): a slow database slows claiming instead of piling up finished jobs
    // whose leases then expire and run again.
    let bound = 5 * lc_worker::HELD_PER_SLOT as i64;
    assert!(
        most_running <= bound,
        "{most_running} jobs held by a worker of concurrency 5 (bound {bound})"
    );
    let reruns: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE attempt > 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reruns, 0, "jobs ran twice without any crash");
    env.assert_exactly_once(&ids).await;
}

/// `examples/custom_kind.rs`: a kind defined in its own crate, registered beside the
/// built-in ones, runs one job end to end through `lc-worker`'s machinery, and a bad
/// payload of it is refused at enqueue.
#[tokio::test]
async fn a_custom_kind_from_its_own_crate_runs_end_to_end() {
    let env = TestEnv::new().await;
    let example = lc_tests::bin("examples/custom_kind");
    let output = tokio::process::Command::new(example)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .env("LC_LOG_FORMAT", "json")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(
        stdout.contains("a bad payload is refused: invalid job: invalid payload for greet"),
        "{stdout}"
    );
    let client = env.sql().await;
    let row = client
        .query_one(
            "SELECT j.state, count(e.*) FILTER (WHERE e.message = 'hello, world')
             FROM jobs j LEFT JOIN job_events e ON e.job_id = j.id
             WHERE j.kind = 'greet' GROUP BY j.state",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, i64>(1), 1, "the handler ran once");
}

/// The statements a job passes through by id (claim, heartbeat, completion) are
/// planned once per connection and then run from PostgreSQL's generic plan, whatever
/// the batch size. Planned again on every run, as they were while the planner could
/// see the length of their id arrays, they took a third of PostgreSQL's time at 500 jobs/s
/// (see `shared/src/store/complete.rs`, "Plans").
#[tokio::test]
async fn by_id_statements_run_from_one_generic_plan() {
    let env = TestEnv::new().await;
    // One connection, so that every run below lands on the session asked afterwards.
    let store = lc_shared::store::Store::connect(&env.database_url, 1).unwrap();
    // Known before the first claim, as in a worker (which registers first): claims and
    // heartbeats then run on the store's sessions that do not wait for the disk.
    store.dialect().await.unwrap();
    let worker = Uuid::new_v4();
    // A table of a size in service, with its statistics: on a table of a few pages a
    // generic plan is the cheaper one whatever the statement says.
    let filler = vec![NewJob::new(JobKind::Noop, json!({})).with_queue("filler"); 1000];
    for _ in 0..20 {
        env.producer().enqueue_batch(&filler).await.unwrap();
    }
    env.sql().await.batch_execute("ANALYZE jobs").await.unwrap();
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 24).await;
    let lease = Duration::from_secs(30);
    let mut claimed = Vec::new();
    // Batches of 1, 2 and 3, as hints arrive: 12 runs.
    let mut rest = &ids[..];
    for size in [1, 2, 3].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, after) = rest.split_at(size.min(rest.len()));
        claimed.extend(store.claim_by_ids(batch, worker, lease).await.unwrap());
        rest = after;
    }
    assert_eq!(claimed.len(), 24, "every job claimed once");
    let held: Vec<lc_shared::store::Claim> = claimed.iter().map(|job| job.claim()).collect();
    for size in [1, 2, 3, 1, 2, 3, 1, 2] {
        let extended = store
            .extend_leases(worker, &held[..size], lease)
            .await
            .unwrap();
        assert_eq!(extended.len(), size);
    }
    for chunk in claimed.chunks(3) {
        let completions: Vec<_> = chunk.iter().map(succeeded).collect();
        let applied = store
            .record_completions(worker, &completions)
            .await
            .unwrap();
        assert_eq!(applied.len(), chunk.len());
    }

    let outcomes = store.client().await.unwrap();
    let claims = store.claims_client().await.unwrap();
    let synchronous_commit = |row: tokio_postgres::Row| row.get::<_, String>(0);
    assert_eq!(
        synchronous_commit(
            outcomes
                .query_one("SHOW synchronous_commit", &[])
                .await
                .unwrap()
        ),
        "on",
        "outcomes wait for the disk"
    );
    assert_eq!(
        synchronous_commit(
            claims
                .query_one("SHOW synchronous_commit", &[])
                .await
                .unwrap()
        ),
        "off",
        "claims and heartbeats do not"
    );
    let mut plans: Vec<(String, i64, i64)> = Vec::new();
    for client in [&outcomes, &claims] {
        plans.extend(
            client
                .query(
                    "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2))),
        );
    }
    for (what, marker) in [
        ("claim by ids", "WITH claimed AS"),
        ("heartbeat", "lease_expires_at = now() + $3"),
        ("completion", "done AS"),
    ] {
        let (_, generic, custom) = plans
            .iter()
            .find(|(statement, _, _)| statement.contains(marker))
            .unwrap_or_else(|| panic!("{what}: not among the prepared statements: {plans:?}"));
        assert!(
            *generic > 0 && *custom <= 5,
            "{what}: {generic} runs from the generic plan, {custom} planned again: {plans:?}"
        );
    }
}

/// A claim straight from a queue (the workers' database poll) takes at most its limit,
/// however stale the planner's statistics. Taken while no job was queued (as after a
/// drain), they told PostgreSQL that the queue's index was empty, and it ran `UPDATE
/// jobs ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` as a nested loop
/// over every queued job that ran the pick again for each; each run skipped the rows
/// the statement had already claimed and took the next. One poll of a worker with one
/// free place then claimed the whole queue (a bench drain: 13.7 s for one statement,
/// the worker's completions waiting on its locks meanwhile, and every job it returned
/// started beyond the worker's concurrency).
#[tokio::test]
async fn a_claim_from_a_queue_takes_at_most_its_limit_whatever_the_statistics() {
    let env = TestEnv::new().await;
    let store = lc_shared::store::Store::connect(&env.database_url, 2).unwrap();
    let sql = env.sql().await;
    // A table of finished jobs and none queued, analyzed so, and kept so while the
    // burst arrives (autovacuum would analyze it again).
    let filler = vec![NewJob::new(JobKind::Noop, json!({})).with_queue("filler"); 1000];
    for _ in 0..5 {
        env.producer().enqueue_batch(&filler).await.unwrap();
    }
    sql.batch_execute(
        "UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE queue = 'filler';
         ALTER TABLE jobs SET (autovacuum_enabled = false);
         ANALYZE jobs",
    )
    .await
    .unwrap();
    let burst = vec![NewJob::new(JobKind::Noop, json!({})).with_queue("burst"); 300];
    env.producer().enqueue_batch(&burst).await.unwrap();

    let worker = Uuid::new_v4();
    let mut bound = lc_shared::store::ScanBound::new(30);
    let lease = Duration::from_secs(30);
    for limit in [1, 5] {
        let claimed = store
            .claim_due("burst", limit, worker, lease, &mut bound)
            .await
            .unwrap();
        assert_eq!(
            claimed.len() as i64,
            limit,
            "claimed {} of a limit of {limit}",
            claimed.len()
        );
    }
    let running: i64 = sql
        .query_one(
            "SELECT count(*) FROM jobs WHERE queue = 'burst' AND state = 'running'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 6, "the rest of the burst is still queued");
}

/// A worker's completions and its heartbeat change the same rows: here the heartbeat
/// given in id order and the completions in reverse, at the same time, as the
/// worker's completer and heartbeat loop may run them. Two such statements locking
/// in different orders at once deadlock; PostgreSQL would break the cycle only after
/// `deadlock_timeout`, set here to 30 s so that a deadlock shows as a round that never
/// ends. A process takes turns with them, so every round ends in milliseconds. Without
/// the turn (and without the locking reads in id order it replaced), the first round
/// deadlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_completions_and_heartbeats_never_wait_on_each_other() {
    let env = TestEnv::new().await;
    let sql = env.sql().await;
    let database: String = sql
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    sql.batch_execute(&format!(
        "ALTER DATABASE \"{database}\" SET deadlock_timeout = '30s'"
    ))
    .await
    .unwrap();
    // Connected after the setting, so that its sessions have it.
    let store = lc_shared::store::Store::connect(&env.database_url, 4).unwrap();
    let worker = Uuid::new_v4();
    let lease = Duration::from_secs(30);
    let mut bound = lc_shared::store::ScanBound::new(30);
    for round in 0..10 {
        let queue = format!("turns-{round}");
        let jobs = vec![NewJob::new(JobKind::Noop, json!({})).with_queue(&queue); 300];
        env.producer().enqueue_batch(&jobs).await.unwrap();
        let mut claimed = store
            .claim_due(&queue, 300, worker, lease, &mut bound)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 300);
        claimed.sort_by_key(|job| job.id);
        let held: Vec<_> = claimed.iter().map(|job| job.claim()).collect();
        let done: Vec<_> = claimed.iter().rev().map(succeeded).collect();
        let both = async {
            tokio::join!(
                store.extend_leases(worker, &held, lease),
                store.record_completions(worker, &done)
            )
        };
        let (extended, completed) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the heartbeat and the completions waited on each other for 10 s"
                )
            });
        extended.unwrap();
        assert_eq!(completed.unwrap().len(), 300, "round {round}");
    }
}

/// A successful run of `job`, as the worker's completer records it.
fn succeeded(job: &lc_shared::store::ClaimedJob) -> lc_shared::store::Completion {
    lc_shared::store::Completion {
        id: job.id,
        attempt: job.attempt,
        claimed_at: job.claimed_at,
        max_attempts: job.max_attempts,
        result: lc_shared::state::RunResult::Succeeded,
        retry_delay_ms: 0,
    }
}
