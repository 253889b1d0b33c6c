//! Concurrency keys in the queue core: jobs that share a key run at most the key's
//! limit at once across every worker, wait `queued` in order without using attempts,
//! start as soon as a slot frees, and follow a limit changed at run time. The database
//! is sampled while they run; every job must end `succeeded` on its first attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use lc_shared::store::IsolationSetting;
use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::{TestEnv, wait_for};
use serde_json::json;
use uuid::Uuid;

/// How many jobs of `key` are `running`, sampled every few milliseconds on a
/// connection of its own until stopped: the most seen, and the latest.
struct Sampler {
    max: Arc<AtomicI64>,
    now: Arc<AtomicI64>,
    samples: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn start(env: &TestEnv, key: &str) -> Sampler {
        let client = env.sql().await;
        let (max, now, samples): (Arc<AtomicI64>, Arc<AtomicI64>, Arc<AtomicI64>) =
            (Arc::default(), Arc::default(), Arc::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (max, now, samples, stop) = (
                Arc::clone(&max),
                Arc::clone(&now),
                Arc::clone(&samples),
                Arc::clone(&stop),
            );
            let key = key.to_owned();
            tokio::spawn(async move {
                let statement = client
                    .prepare(
                        "SELECT count(*) FROM jobs WHERE concurrency_key = $1 AND state = 'running'",
                    )
                    .await
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let running: i64 = client.query_one(&statement, &[&key]).await.unwrap().get(0);
                    now.store(running, Ordering::Relaxed);
                    max.fetch_max(running, Ordering::Relaxed);
                    // Release: whoever sees this count sees the `now` stored before it.
                    samples.fetch_add(1, Ordering::Release);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        Sampler {
            max,
            now,
            samples,
            stop,
            task,
        }
    }

    fn max(&self) -> i64 {
        self.max.load(Ordering::Relaxed)
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::Relaxed)
    }

    /// The running count of a sample begun after this call. `now` may still hold one
    /// taken before it: right after a limit was lowered, a stale low count would let a
    /// test start judging the new limit while jobs claimed under the old one run.
    async fn fresh_now(&self) -> i64 {
        let seen = self.samples.load(Ordering::Acquire);
        // The sample in flight may have begun before this call; the one after it did not.
        wait_for("two more samples", Duration::from_secs(10), || async {
            (self.samples.load(Ordering::Acquire) >= seen + 2).then_some(())
        })
        .await;
        self.now()
    }

    /// Forgets the most seen so far (after a limit changed).
    fn reset_max(&self) {
        self.max.store(self.now(), Ordering::Relaxed);
    }

    async fn stop(self) -> (i64, i64) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = (self.max(), self.samples.load(Ordering::Relaxed));
        self.task.await.unwrap();
        (counts.0.max(self.max.load(Ordering::Relaxed)), counts.1)
    }
}

/// Enqueues `n` sleep jobs of `ms` with `key`, one statement each so that each is due
/// a little later than the one before (their order is the key's order).
async fn enqueue_keyed(env: &TestEnv, key: &str, ms: u64, n: usize) -> Vec<Uuid> {
    let producer = env.producer();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = NewJob::new(JobKind::Sleep, json!({"ms": ms, "record": true}))
            .with_concurrency_key(key);
        ids.push(producer.enqueue(job).await.unwrap().id);
    }
    producer.flush_hints().await;
    ids
}

/// The jobs, by due time, with when they started and their attempt.
async fn starts(env: &TestEnv, ids: &[Uuid]) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>, i64)> {
    env.sql()
        .await
        .query(
            "SELECT id, started_at, attempt FROM jobs WHERE id = ANY($1) ORDER BY run_at, id",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

lc_tests::in_both_isolations!(jobs_of_one_key_never_run_more_than_its_limit_across_workers);

async fn jobs_of_one_key_never_run_more_than_its_limit_across_workers(isolation: IsolationSetting) {
    let env = TestEnv::new().await.with_isolation(isolation);
    let key = "tenant:42";
    let limit = 3;
    let inspector = env.producer().inspector();
    inspector.set_concurrency_limit(key, limit).await.unwrap();
    let sampler = Sampler::start(&env, key).await;
    // Three workers of 20 slots each: far more room than the key allows.
    let workers = vec![
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    let keyed = enqueue_keyed(&env, key, 250, 24).await;
    // Jobs without a key are not held up by a full key.
    let free = lc_tests::enqueue_many(&env, JobKind::Sleep, json!({"ms": 10}), 30).await;
    let started = Instant::now();
    env.wait_terminal(&free, Duration::from_secs(30)).await;
    let free_done = started.elapsed();
    let waiting = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM jobs WHERE concurrency_key = $1 AND state = 'queued'",
            &[&key],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(
        waiting > 0,
        "the keyless jobs finished ({free_done:?}) only after the keyed ones"
    );
    let states = env.wait_terminal(&keyed, Duration::from_secs(90)).await;
    let (max, samples) = sampler.stop().await;
    println!("{samples} samples; at most {max} of {key} running (limit {limit})");
    assert!(
        states.values().all(|state| *state == JobState::Succeeded),
        "{states:?}"
    );
    assert!(
        max <= limit,
        "{max} jobs of {key} ran at once (limit {limit})"
    );
    assert_eq!(max, limit, "the limit was never used in full");
    // Waiting used no attempt, and the key's jobs started in their order.
    let rows = starts(&env, &keyed).await;
    assert!(rows.iter().all(|(_, _, attempt)| *attempt == 1), "{rows:?}");
    for pair in rows.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "job {} started after job {}, which was due later",
            pair[0].0,
            pair[1].0
        );
    }
    env.assert_exactly_once(&keyed).await;
    let listed = inspector.concurrency_limits(Some(key)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].limit, listed[0].running, listed[0].waiting),
        (Some(limit), 0, 0)
    );
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test]
async fn a_concurrency_limit_changed_at_run_time_takes_effect() {
    let env = TestEnv::new().await;
    let key = "machine:test:ACCOUNT";
    let inspector = env.producer().inspector();
    // Refused limits name what is wrong and write nothing.
    for bad in [0, -1] {
        let err = inspector
            .set_concurrency_limit(key, bad)
            .await
            .expect_err("a limit below 1");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid concurrency limit for key \"{key}\": limit must be at least 1, got {bad}"
            )
        );
    }
    assert!(inspector.concurrency_limits(None).await.unwrap().is_empty());
    inspector.set_concurrency_limit(key, 1).await.unwrap();

    let sampler = Sampler::start(&env, key).await;
    let workers = vec![
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    let ids = enqueue_keyed(&env, key, 400, 24).await;
    let count_done = || async {
        env.sql()
            .await
            .query_one(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'succeeded'",
                &[&ids],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_for(
        "two jobs done, one at a time",
        Duration::from_secs(30),
        || async { (count_done().await >= 2).then_some(()) },
    )
    .await;
    assert_eq!(sampler.max(), 1, "more than one ran under limit 1");

    // Raised: the waiting jobs start at once, up to the new limit.
    let raised = inspector.set_concurrency_limit(key, 4).await.unwrap();
    assert_eq!(raised.limit, Some(4));
    sampler.reset_max();
    let changed = Instant::now();
    wait_for(
        "four running under limit 4",
        Duration::from_secs(5),
        || async { (sampler.max() == 4).then_some(()) },
    )
    .await;
    println!("limit 1 -> 4: four running {:?} after", changed.elapsed());
    wait_for("two more rounds", Duration::from_secs(30), || async {
        (count_done().await >= 10).then_some(())
    })
    .await;
    assert_eq!(sampler.max(), 4, "more than four ran under limit 4");

    // Lowered: the running ones finish, then no more than two run.
    inspector.set_concurrency_limit(key, 2).await.unwrap();
    wait_for("at most two running", Duration::from_secs(10), || async {
        (sampler.fresh_now().await <= 2).then_some(())
    })
    .await;
    sampler.reset_max();
    wait_for(
        "more jobs done under limit 2",
        Duration::from_secs(30),
        || async { (count_done().await >= 16).then_some(()) },
    )
    .await;
    assert!(sampler.max() <= 2, "{} ran under limit 2", sampler.max());

    // Cleared: no limit, everything left starts.
    let cleared = inspector.clear_concurrency_limit(key).await.unwrap();
    assert_eq!(cleared.limit, None);
    sampler.reset_max();
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    let (max, _) = sampler.stop().await;
    assert!(max > 2, "clearing the limit left at most {max} running");
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    assert!(
        starts(&env, &ids)
            .await
            .iter()
            .all(|(_, _, attempt)| *attempt == 1)
    );
    env.assert_exactly_once(&ids).await;
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test]
async fn keyed_jobs_start_without_their_hints_and_from_the_inbox() {
    let env = TestEnv::new().await;
    let key = "lost-hints";
    env.producer()
        .inspector()
        .set_concurrency_limit(key, 2)
        .await
        .unwrap();
    // Enqueued in a transaction and never notified: no hint until the sweeper sends it.
    // Another key's job comes through the inbox stream.
    let jobs: Vec<NewJob> = (0..6)
        .map(|_| NewJob::new(JobKind::Sleep, json!({"ms": 50})).with_concurrency_key(key))
        .collect();
    let mut client = env.store.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let enqueued = env
        .producer()
        .enqueue_in_transaction(&tx, &jobs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut ids: Vec<Uuid> = enqueued.iter().map(|job| job.id).collect();
    env.queue
        .add_inbox(r#"{"kind":"sleep","payload":{"ms":5},"concurrency_key":"inbox-key"}"#)
        .await
        .unwrap();
    // No sweep runs (its interval is an hour), so no hint is sent for them: only the
    // workers' database poll can start them.
    let mut config = env.worker_config();
    config.sweep_interval = Duration::from_secs(3600);
    let worker = env.spawn_worker(config);
    let inbox_job: Uuid = wait_for("the inbox job", Duration::from_secs(15), || async {
        env.sql()
            .await
            .query_opt(
                "SELECT id FROM jobs WHERE concurrency_key = 'inbox-key'",
                &[],
            )
            .await
            .unwrap()
            .map(|row| row.get(0))
    })
    .await;
    ids.push(inbox_job);
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    worker.stop().await;
}
