//! The database fails over: a private highly available PostgreSQL (`scripts/ha.sh`: a
//! pg_auto_failover monitor, a primary and a synchronous standby) whose primary is killed
//! with `kill -9` while three workers run thousands of jobs, producers enqueue through
//! the library, `lc enqueue` and the Redis inbox, jobs are cancelled and a deployment is
//! being provisioned; later the old primary comes back as a standby. Nothing acknowledged
//! may be lost or run twice.
//!
//! `LC_HA_ASYNC=1` runs the same drill with the standby out of the write quorum
//! (asynchronous replication), where an acknowledged commit may be lost: the checks
//! below are the ones that would see it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::ha::{HaUnavailable, PrivateHaPostgres};
use lc_tests::{TestEnv, shared_redis_url, wait_for};
use serde_json::json;
use uuid::Uuid;

use crate::deploy;

/// Jobs that the test was told exist (an answer, an id printed, an XADD accepted), and
/// the tries that got an error instead (not acknowledged: they may or may not exist).
#[derive(Default)]
struct Acknowledged {
    ids: Vec<Uuid>,
    refused: usize,
}

/// Single enqueues through the library (group commit), `tasks` callers at a time, until
/// `stop`.
fn library_stream(
    env: &TestEnv,
    tasks: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Acknowledged>> {
    (0..tasks)
        .map(|_| {
            let producer = env.producer();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acked = Acknowledged::default();
                while !stop.load(Ordering::Relaxed) {
                    let job = NewJob::new(JobKind::Sleep, json!({"ms": 5, "record": true}));
                    match producer.enqueue(job).await {
                        Ok(enqueued) => acked.ids.push(enqueued.id),
                        Err(_) => acked.refused += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                producer.flush_hints().await;
                acked
            })
        })
        .collect()
}

/// `lc enqueue` run again and again, until `stop`.
fn lc_stream(env: &TestEnv, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Acknowledged> {
    let (url, redis, prefix) = (
        env.database_url.clone(),
        env.redis_url.clone(),
        env.prefix.clone(),
    );
    std::thread::spawn(move || {
        let mut acked = Acknowledged::default();
        while !stop.load(Ordering::Relaxed) {
            let output = std::process::Command::new(lc_tests::bin("lc"))
                .env("DATABASE_URL", &url)
                .env("REDIS_URL", &redis)
                .env("LC_REDIS_PREFIX", &prefix)
                .args(["enqueue", "sleep", "--payload", r#"{"ms":5,"record":true}"#])
                .output()
                .unwrap();
            match String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse::<Uuid>()
            {
                Ok(id) if output.status.success() => acked.ids.push(id),
                _ => acked.refused += 1,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        acked
    })
}

/// Cancels `ids` one by one, each again until the database answers (as an operator
/// would rerun `lc cancel`): the store's own retries are bounded, a failover may last
/// longer.
async fn cancel_all(producer: &lc_producer::Producer, ids: &[Uuid]) -> usize {
    let mut failed_tries = 0;
    for id in ids {
        let started = Instant::now();
        loop {
            match producer.cancel(*id).await {
                Ok(_) => break,
                Err(err) => {
                    failed_tries += 1;
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "cancel of {id} still failing after 60 s: {err}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    failed_tries
}

/// Inserts into `failover_probe` every 20 ms until one insert commits; returns when.
async fn first_commit(database_url: &str) -> Instant {
    loop {
        if let Ok((client, connection)) =
            tokio_postgres::connect(database_url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            if client
                .execute("INSERT INTO failover_probe DEFAULT VALUES", &[])
                .await
                .is_ok()
            {
                return Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count_in(env: &TestEnv, sql: &str) -> i64 {
    env.sql()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_killed_mid_run_loses_and_duplicates_nothing() {
    let asynchronous = std::env::var("LC_HA_ASYNC").is_ok_and(|value| value == "1");
    let cluster = match tokio::task::spawn_blocking(move || PrivateHaPostgres::start(asynchronous))
        .await
        .unwrap()
    {
        Ok(cluster) => cluster,
        Err(HaUnavailable::NoPackages(why)) => {
            // scripts/test.sh installs them first; only a run without root or apt gets here
            eprintln!(
                "SKIPPED: pg_auto_failover (postgresql-15-auto-failover, pg-auto-failover-cli) \
                 cannot be installed here: {why}"
            );
            return;
        }
    };
    let cluster = Arc::new(cluster);
    let env = TestEnv::with_services(cluster.admin_url(), &shared_redis_url()).await;
    env.sql()
        .await
        .batch_execute("CREATE TABLE failover_probe (at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .await
        .unwrap();

    // Leases shorter than the failover (about 8 s here): healthy ones survive only
    // because the sweepers wait for the heartbeats after an outage (worker/src/sweeper.rs).
    let worker_config = || {
        let mut config = deploy::config_with(&env, &["STANDIN_CREATE_DELAY_MS=4000"]);
        config.lease = Duration::from_secs(4);
        config.heartbeat = Duration::from_millis(500);
        config
    };
    let workers = vec![
        env.spawn_worker(worker_config()),
        env.spawn_worker(worker_config()),
        env.spawn_worker(worker_config()),
    ];

    // A deployment of two docker-machine nodes, whose creates take 4 s each.
    let name = deploy::unique(&env, "ha");
    let _containers = deploy::Containers(vec![name.clone()]);
    let deployment = deploy::create(&env, &deploy::machine_spec(&name, 2, 5), &[]).await;

    // Jobs running across the failover: their leases (4 s) are shorter than it.
    let producer = env.producer();
    let long_jobs = vec![NewJob::new(JobKind::Sleep, json!({"ms": 45_000, "record": true})); 30];
    let long_ids: Vec<Uuid> = producer
        .enqueue_batch(&long_jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    // Thousands of jobs through the library, delayed ones to cancel, the inbox.
    let mut batch_ids = Vec::new();
    for _ in 0..3 {
        let jobs = vec![NewJob::new(JobKind::Sleep, json!({"ms": 20, "record": true})); 1000];
        batch_ids.extend(
            producer
                .enqueue_batch(&jobs)
                .await
                .unwrap()
                .into_iter()
                .map(|job| job.id),
        );
    }
    let delayed_jobs = vec![
        NewJob::new(JobKind::Noop, json!({}))
            .with_run_at(chrono::Utc::now() + chrono::Duration::hours(1));
        200
    ];
    let delayed: Vec<Uuid> = producer
        .enqueue_batch(&delayed_jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    crate::crash::add_inbox_batch(&env, "ha-before-", 100).await;
    let stop = Arc::new(AtomicBool::new(false));
    let library = library_stream(&env, 8, stop.clone());
    let lc = lc_stream(&env, stop.clone());
    let cancel_failures_before = cancel_all(&producer, &delayed[..100]).await;

    // Mid-run: the long jobs running, a third of the batch done, the machines being
    // created.
    wait_for(
        "the long jobs to start",
        Duration::from_secs(60),
        || async {
            let states = env.states(&long_ids).await;
            states
                .values()
                .all(|state| *state != JobState::Queued)
                .then_some(())
        },
    )
    .await;
    wait_for(
        "a third of the jobs to finish",
        Duration::from_secs(90),
        || async {
            let done = env
                .states(&batch_ids)
                .await
                .values()
                .filter(|state| **state == JobState::Succeeded)
                .count();
            (done >= 1000).then_some(())
        },
    )
    .await;
    let provisioning = deploy::deployment(&env, deployment).await.state;
    let expired_before = count_in(
        &env,
        "SELECT count(*) FROM job_events WHERE message LIKE 'lease expired%'",
    )
    .await;

    let running_across: Vec<Uuid> = env
        .states(&long_ids)
        .await
        .into_iter()
        .filter(|(_, state)| *state == JobState::Running)
        .map(|(id, _)| id)
        .collect();
    assert!(
        running_across.len() >= long_ids.len() / 2,
        "only {} of the long jobs run at the kill",
        running_across.len()
    );
    println!(
        "long jobs running at the kill: {} of {}",
        running_across.len(),
        long_ids.len()
    );
    let killer = cluster.clone();
    let (killed_node, killed_at) = tokio::task::spawn_blocking(move || {
        let node = killer.kill_primary();
        (node, Instant::now())
    })
    .await
    .unwrap();
    println!("kill -9 of the primary (node {killed_node}) while the deployment was {provisioning}");
    // During the outage: inbox messages are accepted by Redis, cancels wait for the
    // database, the producers' enqueues wait inside the library.
    crate::crash::add_inbox_batch(&env, "ha-during-", 100).await;
    let cancelling = {
        let (producer, delayed) = (producer.clone(), delayed[100..].to_vec());
        tokio::spawn(async move { cancel_all(&producer, &delayed).await })
    };
    let committed_at = first_commit(&env.database_url).await;
    let failover = committed_at - killed_at;
    println!(
        "failover: first commit on the new primary {} ms after kill -9 of the old one",
        failover.as_millis()
    );

    // The old primary comes back as a standby of the new one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rejoin = cluster.clone();
    let rejoined = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        rejoin.start_node(killed_node);
        rejoin.wait_until_replicated(Duration::from_secs(120));
        started.elapsed()
    })
    .await
    .unwrap();
    println!(
        "node {killed_node} rejoined as a standby in {} ms; the new primary is node {}",
        rejoined.as_millis(),
        cluster.primary()
    );
    println!("{}", cluster.status());

    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: Vec<Uuid> = batch_ids.iter().chain(&long_ids).copied().collect();
    let mut refused = 0;
    for task in library {
        let acked = task.await.unwrap();
        acknowledged.extend(acked.ids);
        refused += acked.refused;
    }
    let lc_acked = tokio::task::spawn_blocking(move || lc.join().unwrap())
        .await
        .unwrap();
    let lc_count = lc_acked.ids.len();
    acknowledged.extend(lc_acked.ids);
    refused += lc_acked.refused;
    let cancel_failures_during = cancelling.await.unwrap();
    let inbox_ids: Vec<Uuid> = wait_for(
        "every inbox message to be a job",
        Duration::from_secs(60),
        || async {
            let rows = env
                .sql()
                .await
                .query("SELECT id FROM jobs WHERE idempotency_key LIKE 'ha-%'", &[])
                .await
                .ok()?;
            (rows.len() == 200).then(|| rows.iter().map(|row| row.get(0)).collect())
        },
    )
    .await;
    acknowledged.extend(&inbox_ids);
    println!(
        "acknowledged: {} jobs ({} in batches, {} by lc enqueue, {} from the inbox, the rest \
         single library enqueues); {refused} enqueues answered with an error; cancel tries \
         that failed: {cancel_failures_before} before, {cancel_failures_during} during the outage",
        acknowledged.len(),
        batch_ids.len(),
        lc_count,
        inbox_ids.len()
    );

    // Every acknowledged job present and terminal exactly once, no attempt's effect
    // twice, every history a chain of legal transitions.
    let unique: HashSet<Uuid> = acknowledged.iter().copied().collect();
    assert_eq!(unique.len(), acknowledged.len(), "an id acknowledged twice");
    let present: HashSet<Uuid> = env
        .sql()
        .await
        .query("SELECT id FROM jobs WHERE id = ANY($1)", &[&acknowledged])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let lost: Vec<&Uuid> = unique.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged jobs are not in the database (their commits went down with the old \
         primary): {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let states = env
        .wait_terminal(&acknowledged, Duration::from_secs(120))
        .await;
    let not_succeeded: Vec<_> = states
        .iter()
        .filter(|(_, state)| **state != JobState::Succeeded)
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "jobs that did not succeed: {not_succeeded:?}"
    );
    env.assert_exactly_once(&acknowledged).await;
    env.assert_legal_histories(&acknowledged).await;
    let cancelled = env.states(&delayed).await;
    assert!(
        delayed
            .iter()
            .all(|id| cancelled.get(id) == Some(&JobState::Cancelled)),
        "every delayed job cancelled"
    );
    env.assert_exactly_once(&delayed).await;
    env.assert_legal_histories(&delayed).await;
    // Healthy leases survived: the jobs that ran across the failover, on workers that
    // all lived, finished in their first attempt. (A claim that committed as the primary
    // died but whose answer was lost is held by no worker: its lease expires and the job
    // runs again, as it should; those are counted, not failed.)
    env.assert_exactly_once(&long_ids).await;
    let long_rows = env
        .sql()
        .await
        .query(
            "SELECT j.id, j.state, j.attempt,
                    (SELECT count(*) FROM job_events e WHERE e.job_id = j.id
                       AND e.message LIKE 'lease expired%')
             FROM jobs j WHERE j.id = ANY($1)",
            &[&running_across],
        )
        .await
        .unwrap();
    for row in &long_rows {
        let (id, state, attempt, expiries): (Uuid, String, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(
            (state.as_str(), attempt, expiries),
            ("succeeded", 1, 0),
            "job {id} ran across the failover on a live worker: its lease must have survived"
        );
    }
    let expired = count_in(
        &env,
        "SELECT count(*) FROM job_events WHERE message LIKE 'lease expired%'",
    )
    .await
        - expired_before;
    println!(
        "leases that expired: {expired} (claims whose answer the failover lost); the {} jobs \
         running across it kept theirs",
        running_across.len()
    );

    // The deployment: deployed (or failed and rolled back), then torn down; nothing left.
    let row = wait_for(
        "the deployment to settle",
        Duration::from_secs(120),
        || async {
            let row = deploy::deployment(&env, deployment).await;
            matches!(row.state.as_str(), "deployed" | "failed" | "torn_down").then_some(row)
        },
    )
    .await;
    println!("deployment {name}: {}", row.state);
    assert_eq!(row.state, "deployed", "{:?}", row.last_error);
    assert_eq!(
        deploy::stored_machines(&env, deployment).await,
        vec![format!("{name}-1"), format!("{name}-2")]
    );
    deploy::teardown_and_check_empty(&env, deployment, &name).await;
    assert!(deploy::stored_machines(&env, deployment).await.is_empty());
    assert!(
        deploy::cloud_droplets(&env).is_empty(),
        "{:?}",
        deploy::cloud_droplets(&env)
    );
    for worker in workers {
        worker.stop().await;
    }
}

/// A pooled connection whose server became read-only (a primary demoted to a standby,
/// as a failover or switchover leaves it) answers writes with SQLSTATE 25006. The store
/// retries the write on a new connection (which a multi-host URL with
/// `target_session_attrs=read-write` takes to the new primary) instead of failing, and
/// drops the connections made before. Here the "demoted" sessions are made by
/// `default_transaction_read_only` on the test's database while the pool connects.
#[tokio::test]
async fn a_write_refused_as_read_only_is_retried_on_a_new_connection() {
    let env = TestEnv::new().await;
    let admin = env.sql().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE demotion_probe (x INT);
             ALTER DATABASE {} SET default_transaction_read_only = on",
            env.db_name
        ))
        .await
        .unwrap();
    let store = lc_shared::store::Store::connect(&env.database_url, 2).unwrap();
    store.ping().await.unwrap();
    let read_only: String = store
        .query_row("SHOW transaction_read_only", &[], |row| row.get(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read_only, "on",
        "the pool's connection is a read-only session"
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            env.db_name
        ))
        .await
        .unwrap();
    let inserted = store
        .execute_one("INSERT INTO demotion_probe VALUES (1)", &[])
        .await
        .expect("the write is retried on a connection that can write");
    assert_eq!(inserted, 1);
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM demotion_probe", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "written once");
}
