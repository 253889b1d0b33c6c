//! Crash drills. Each kills, stops, restarts or cuts off a component in the middle of
//! a run and then checks that every job ended in exactly one terminal state with no
//! attempt's effect recorded twice.

use std::collections::HashSet;
use std::time::Duration;

use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::{PrivatePostgres, PrivateRedis, TestEnv, enqueue_many, wait_for};
use serde_json::json;
use uuid::Uuid;

use lc_shared::store::IsolationSetting;

lc_tests::in_both_isolations!(
    a_killed_worker_s_jobs_are_rerun_elsewhere_after_the_lease_expires,
    a_stopped_worker_cannot_complete_jobs_taken_over_after_its_lease_expired,
    redis_flushed_mid_run_loses_nothing,
    redis_restarted_empty_mid_run_loses_nothing,
    database_connections_terminated_mid_run_lose_nothing,
    jobs_enqueued_while_redis_is_down_still_run,
    duplicate_hints_and_a_connection_cut_lose_and_duplicate_nothing,
    postgres_crashing_twice_mid_run_loses_and_duplicates_nothing,
    postgres_crashing_right_after_a_burst_of_claims_loses_and_duplicates_nothing,
);

async fn count_in_state(env: &TestEnv, ids: &[Uuid], state: JobState) -> usize {
    env.states(ids)
        .await
        .values()
        .filter(|found| **found == state)
        .count()
}

async fn a_killed_worker_s_jobs_are_rerun_elsewhere_after_the_lease_expires(
    isolation: IsolationSetting,
) {
    let env = TestEnv::new().await.with_isolation(isolation);
    let mut doomed = env.spawn_worker_process(&["--concurrency", "100"]);
    let ids = enqueue_many(
        &env,
        JobKind::Sleep,
        json!({"ms": 1500, "record": true}),
        100,
    )
    .await;
    wait_for(
        "jobs to be running in the doomed worker",
        Duration::from_secs(20),
        || async { (count_in_state(&env, &ids, JobState::Running).await >= 50).then_some(()) },
    )
    .await;
    doomed.signal(libc::SIGKILL);
    doomed.wait(Duration::from_secs(5));
    let survivor = env.spawn_worker(env.worker_config());
    let states = env.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    let expired: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(DISTINCT job_id) FROM job_events WHERE message LIKE 'lease expired%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        expired >= 50,
        "only {expired} jobs went through lease expiry"
    );
    survivor.stop().await;
}

async fn a_stopped_worker_cannot_complete_jobs_taken_over_after_its_lease_expired(
    isolation: IsolationSetting,
) {
    let env = TestEnv::new().await.with_isolation(isolation);
    let mut frozen = env.spawn_worker_process(&["--concurrency", "5"]);
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 1000, "record": true}), 5).await;
    wait_for(
        "all five running in the first worker",
        Duration::from_secs(20),
        || async { (count_in_state(&env, &ids, JobState::Running).await == 5).then_some(()) },
    )
    .await;
    frozen.signal(libc::SIGSTOP);
    let second = env.spawn_worker(env.worker_config());
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    for id in &ids {
        assert_eq!(
            env.store.job(*id).await.unwrap().unwrap().attempt,
            2,
            "taken over by attempt 2"
        );
    }
    // Wake the first worker: its handlers' sleeps are long over, so it tries to
    // record attempt 1 (or its heartbeat notices first). Either way it is refused.
    frozen.signal(libc::SIGCONT);
    wait_for(
        "the woken worker to be fenced off",
        Duration::from_secs(15),
        || async {
            let log = frozen.log_text();
            (log.contains("result refused") || log.contains("no longer held")).then_some(())
        },
    )
    .await;
    frozen.signal(libc::SIGTERM);
    assert_eq!(
        frozen.wait(Duration::from_secs(15)),
        Some(0),
        "graceful exit after SIGTERM"
    );
    second.stop().await;
    env.assert_exactly_once(&ids).await;
    let late: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM job_events WHERE job_id = ANY($1) AND attempt = 1 AND to_state = 'succeeded'",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "a fenced-off attempt recorded a result");
}

/// Runs 1,000 short jobs on two workers and calls `disrupt` once a third are done.
async fn disrupted_run<F, Fut>(env: &TestEnv, disrupt: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let workers = [
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    let ids = enqueue_many(env, JobKind::Sleep, json!({"ms": 5, "record": true}), 1000).await;
    wait_for(
        "a third of the jobs to finish",
        Duration::from_secs(60),
        || async { (count_in_state(env, &ids, JobState::Succeeded).await >= 333).then_some(()) },
    )
    .await;
    disrupt().await;
    let states = env.wait_terminal(&ids, Duration::from_secs(120)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    for worker in workers {
        worker.stop().await;
    }
}

async fn redis_flushed_mid_run_loses_nothing(isolation: IsolationSetting) {
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_redis(&redis.url())
        .await
        .with_isolation(isolation);
    disrupted_run(&env, || redis.flushall()).await;
}

async fn redis_restarted_empty_mid_run_loses_nothing(isolation: IsolationSetting) {
    let mut redis = PrivateRedis::start().await;
    let env = TestEnv::with_redis(&redis.url())
        .await
        .with_isolation(isolation);
    disrupted_run(&env, || redis.restart()).await;
    // The sweeper noticed the missing marker and rebuilt the queue. (The test's own
    // connection reconnects on first use after the restart, hence the wait.)
    wait_for(
        "the queue marker to be rebuilt",
        Duration::from_secs(10),
        || async {
            env.queue
                .has_marker("default")
                .await
                .ok()
                .filter(|found| *found)
        },
    )
    .await;
}

async fn database_connections_terminated_mid_run_lose_nothing(isolation: IsolationSetting) {
    let env = TestEnv::new().await.with_isolation(isolation);
    disrupted_run(&env, || async {
        for _ in 0..3 {
            env.terminate_db_connections().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

async fn jobs_enqueued_while_redis_is_down_still_run(isolation: IsolationSetting) {
    let mut redis = PrivateRedis::start().await;
    let env = TestEnv::with_redis(&redis.url())
        .await
        .with_isolation(isolation);
    let worker = env.spawn_worker(env.worker_config());
    redis.stop();
    // Enqueue succeeds: the job is durable; its hint cannot be sent.
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 1, "record": true}), 20).await;
    // Workers claim due jobs straight from the database while Redis is away.
    env.wait_terminal(&ids, Duration::from_secs(30)).await;
    redis.restart().await;
    let more = enqueue_many(&env, JobKind::Noop, json!({"record": true}), 20).await;
    env.wait_terminal(&more, Duration::from_secs(30)).await;
    worker.stop().await;
    let all: Vec<Uuid> = ids.into_iter().chain(more).collect();
    env.assert_exactly_once(&all).await;
    assert_eq!(count_in_state(&env, &all, JobState::Succeeded).await, 40);
}

#[tokio::test]
async fn graceful_shutdown_finishes_short_jobs_and_releases_long_ones_at_once() {
    let env = TestEnv::new().await;
    let mut config = env.worker_config();
    // A long lease proves that the long jobs come back by release, not by expiry.
    config.lease = Duration::from_secs(60);
    config.heartbeat = Duration::from_secs(5);
    config.grace = Duration::from_millis(1500);
    let first = env.spawn_worker(config.clone());
    let short = enqueue_many(&env, JobKind::Sleep, json!({"ms": 300, "record": true}), 5).await;
    let long = enqueue_many(
        &env,
        JobKind::Sleep,
        json!({"ms": 30_000, "record": true}),
        5,
    )
    .await;
    let all: Vec<Uuid> = short.iter().chain(&long).copied().collect();
    wait_for("all ten running", Duration::from_secs(20), || async {
        (count_in_state(&env, &all, JobState::Running).await == 10).then_some(())
    })
    .await;
    first.stop().await;
    assert_eq!(
        count_in_state(&env, &short, JobState::Succeeded).await,
        5,
        "short jobs finish within the grace period"
    );
    assert_eq!(
        count_in_state(&env, &long, JobState::Queued).await,
        5,
        "long jobs are handed back"
    );
    for id in &long {
        let job = env.store.job(*id).await.unwrap().unwrap();
        assert!(job.lease_owner.is_none());
        assert_eq!(job.max_attempts, 6, "a released attempt does not count");
    }
    // A second worker takes them at once, long before a 60 s lease could expire.
    let started = std::time::Instant::now();
    let mut quick = config.clone();
    quick.grace = Duration::from_secs(5);
    let second = env.spawn_worker(quick);
    wait_for(
        "the released jobs to run again",
        Duration::from_secs(10),
        || async { (count_in_state(&env, &long, JobState::Running).await == 5).then_some(()) },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    for id in &long {
        env.store.cancel(*id, "test over").await.unwrap();
    }
    second.stop().await;
    env.assert_exactly_once(&all).await;
    let released: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM job_events WHERE message LIKE 'released on shutdown%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(released, 5);
}

#[tokio::test]
async fn sigterm_stops_a_worker_process_cleanly() {
    let env = TestEnv::new().await;
    let mut worker = env.spawn_worker_process(&[]);
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 200}), 3).await;
    wait_for("the jobs to start", Duration::from_secs(20), || async {
        (count_in_state(&env, &ids, JobState::Queued).await == 0).then_some(())
    })
    .await;
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait(Duration::from_secs(15)), Some(0));
    assert!(worker.log_text().contains("worker stopped"));
    let states = env.wait_terminal(&ids, Duration::from_secs(5)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    let stopped: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM workers WHERE stopped_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stopped, 1);
    let _ = NewJob::new(JobKind::Noop, json!({}));
}

async fn duplicate_hints_and_a_connection_cut_lose_and_duplicate_nothing(
    isolation: IsolationSetting,
) {
    // Every hint sent twice, and every connection cut along the way: a duplicate hint
    // loses its claim race harmlessly at either isolation.
    let env = TestEnv::new().await.with_isolation(isolation);
    let workers = [
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 2, "record": true}), 1000).await;
    // Duplicate hints and a connection cut along the way.
    env.queue
        .push_hints(
            &ids.iter()
                .map(|id| lc_shared::store::HintTarget {
                    id: *id,
                    queue: "default".into(),
                    priority: lc_shared::Priority::Normal,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    env.terminate_db_connections().await;
    let states = env.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    for worker in workers {
        worker.stop().await;
    }
    env.assert_exactly_once(&ids).await;
}

/// Inbox messages written in one MULTI/EXEC (so a worker's blocked read takes them all
/// at once), each with idempotency key `{prefix}{i}`.
pub(crate) async fn add_inbox_batch(env: &TestEnv, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..n {
        let body = format!(
            r#"{{"kind":"sleep","payload":{{"ms":5,"record":true}},"idempotency_key":"{prefix}{i}"}}"#
        );
        pipe.cmd("XADD")
            .arg(env.queue.inbox_key())
            .arg("*")
            .arg("job")
            .arg(body)
            .ignore();
    }
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    pipe.query_async::<()>(&mut conn).await.unwrap();
}

/// Inbox entries read by some worker and not acknowledged yet.
async fn inbox_pending(env: &TestEnv) -> i64 {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return -1;
    };
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(env.queue.inbox_key())
        .arg(lc_shared::queue::INBOX_GROUP)
        .query_async(&mut conn)
        .await
        .unwrap_or(redis::Value::Nil);
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(count)) => *count,
            _ => 0,
        },
        _ => 0,
    }
}

async fn postgres_crashing_twice_mid_run_loses_and_duplicates_nothing(isolation: IsolationSetting) {
    // A private PostgreSQL (serializable, like the shared one) and a private Redis, so
    // crashing the one and flushing the other disturbs no other test.
    let pg = PrivatePostgres::start().await;
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &redis.url())
        .await
        .with_isolation(isolation);
    let workers = [
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 5, "record": true}), 1000).await;
    const INBOX_PER_OUTAGE: usize = 50;
    for round in 1..=2 {
        wait_for(
            "a share of the jobs to finish",
            Duration::from_secs(60),
            || async {
                (count_in_state(&env, &ids, JobState::Succeeded).await >= 333 * round).then_some(())
            },
        )
        .await;
        pg.crash();
        // Accepted while the database is down: XADD succeeds, a worker reads them and
        // cannot store them, so for now they exist only in Redis.
        add_inbox_batch(&env, &format!("outage-{round}-"), INBOX_PER_OUTAGE).await;
        wait_for(
            "a worker to read the inbox messages",
            Duration::from_secs(20),
            || async { (inbox_pending(&env).await == INBOX_PER_OUTAGE as i64).then_some(()) },
        )
        .await;
        // Down for longer than a lease (2 s) and the store's retry window.
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg.start_server().await;
        // Redis without persistence loses everything shortly after the database is
        // back (a restart, a failover, an operator's FLUSHALL).
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.flushall().await;
    }
    let inbox_ids: Vec<Uuid> = wait_for(
        "every inbox message written during the outages to be a job",
        Duration::from_secs(60),
        || async {
            let rows = env
                .sql()
                .await
                .query(
                    "SELECT id FROM jobs WHERE idempotency_key LIKE 'outage-%'",
                    &[],
                )
                .await
                .ok()?;
            (rows.len() == 2 * INBOX_PER_OUTAGE)
                .then(|| rows.iter().map(|row| row.get(0)).collect())
        },
    )
    .await;
    let all: Vec<Uuid> = ids.iter().chain(&inbox_ids).copied().collect();
    let states = env.wait_terminal(&all, Duration::from_secs(120)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&all).await;
    for worker in workers {
        worker.stop().await;
    }
}

/// Claims and lease extensions commit without waiting for the disk on PostgreSQL (see
/// `Flush` in the store): a crash right after a burst of claims may lose some of them.
/// A lost claim must be an attempt that never started: no job lost, no attempt's
/// effect recorded twice, every job terminal exactly once. The private server has
/// `fsync = off`, but an immediate stop still loses what sat in its WAL buffers (its
/// shared memory), which is exactly the unflushed commits.
async fn postgres_crashing_right_after_a_burst_of_claims_loses_and_duplicates_nothing(
    isolation: IsolationSetting,
) {
    let pg = PrivatePostgres::start().await;
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &redis.url())
        .await
        .with_isolation(isolation);
    // Enqueued (and so flushed) before any worker runs: the burst that follows is
    // claims only, and the jobs run long enough that no outcome flushes it.
    let ids = enqueue_many(
        &env,
        JobKind::Sleep,
        json!({"ms": 1500, "record": true}),
        600,
    )
    .await;
    // The log writer flushes unflushed commits every 200 ms by default; at its longest
    // delay only full WAL pages and the next commit that waits (an outcome, a worker's
    // heartbeat) flush the claims, which widens the window in which a crash loses some.
    // (Measured: most runs still lose none, as only the last partial page is at risk;
    // the line printed at the end says how many were lost.)
    let admin = lc_tests::deadpool_like::connect(&pg.admin_url()).await;
    for statement in [
        "ALTER SYSTEM SET wal_writer_delay = '10s'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.unwrap();
    }
    let mut config = env.worker_config();
    config.worker.concurrency = 300;
    // The event relay marks the claims' events published right after them, a commit
    // that waits and so flushes the claims: none here.
    config.worker.events.no_events = true;
    let workers = [env.spawn_worker(config.clone()), env.spawn_worker(config)];
    let client = env.sql().await;
    // Every claim event as (job, attempt, when): a claim made again after a lost one
    // has the same job and attempt, but not the same time.
    const CLAIMS: &str =
        "SELECT job_id, attempt, at::TEXT FROM job_events WHERE to_state = 'running'";
    let claims = |rows: Vec<tokio_postgres::Row>| -> HashSet<(Uuid, i64, String)> {
        rows.iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    };
    wait_for("a burst of claims", Duration::from_secs(30), || async {
        let claimed = client.query(CLAIMS, &[]).await.ok()?.len();
        (claimed >= 200).then_some(())
    })
    .await;
    // Committed (if perhaps not yet on disk) just before the crash.
    let before = claims(client.query(CLAIMS, &[]).await.unwrap());
    pg.crash();
    // Down for longer than a lease (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_server().await;
    let states = env.wait_terminal(&ids, Duration::from_secs(120)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    // Not asserted (it depends on when the log writer ran), but shows what the drill
    // did: claims that had committed and were gone after the crash.
    let after = claims(env.sql().await.query(CLAIMS, &[]).await.unwrap());
    eprintln!(
        "{} claims committed before the crash, {} of them lost with the server",
        before.len(),
        before.difference(&after).count()
    );
    for worker in workers {
        worker.stop().await;
    }
}
