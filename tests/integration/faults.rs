//! Faults an operator's bad day brings (issue 9): a database down while inbox
//! messages arrive, stale attempts that wake up, junk hints, workers and `lc enqueue`
//! started during an outage, the log lines an outage leaves, hung handlers, and a
//! PostgreSQL crash in the middle of a run.

use std::time::{Duration, Instant};

use lc_shared::state::RunResult;
use lc_shared::store::{Claim, Completion, HintTarget};
use lc_shared::{JobKind, JobState, NewJob, Priority};
use lc_tests::{PrivatePostgres, PrivateRedis, TestEnv, enqueue_many, shared_redis_url, wait_for};
use serde_json::json;
use uuid::Uuid;

use lc_shared::store::IsolationSetting;

lc_tests::in_both_isolations!(
    effects_of_an_attempt_that_is_not_live_are_not_recorded,
    a_claim_the_database_lost_and_the_same_worker_made_again_fences_out_the_first_run,
    lc_enqueue_waits_out_a_database_restart_and_makes_one_job,
    inbox_messages_read_while_the_database_is_down_are_ingested_once_it_is_back,
);

/// Claims one job for `worker`, by hand, as a fetcher would.
async fn claim_one(env: &TestEnv, id: Uuid, worker: Uuid) -> Claim {
    let claimed = env
        .store
        .claim_by_ids(&[id], worker, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "job {id} claimed");
    claimed[0].claim()
}

async fn effects_of_an_attempt_that_is_not_live_are_not_recorded(isolation: IsolationSetting) {
    let env = TestEnv::new().await.with_isolation(isolation);
    let first = Uuid::new_v4();
    let second = Uuid::new_v4();
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"record": true}), 3).await;

    // Attempt 1 of job 0 is live: its effect counts.
    let live_one = claim_one(&env, ids[0], first).await;
    assert!(env.store.record_effect(&live_one, first).await.unwrap());

    // Job 1: attempt 1 lost its lease and attempt 2 (another worker) holds the job.
    let stale = claim_one(&env, ids[1], first).await;
    env.sql()
        .await
        .execute(
            "UPDATE jobs SET lease_expires_at = now() - INTERVAL '1 second' WHERE id = $1",
            &[&ids[1]],
        )
        .await
        .unwrap();
    env.store
        .expire_leases(100, &mut lc_shared::store::ScanBound::new(1))
        .await
        .unwrap();
    let live = claim_one(&env, ids[1], second).await;
    assert_eq!(live.attempt, stale.attempt + 1);
    assert!(!env.store.record_effect(&stale, first).await.unwrap());
    // The live claim, but written by a worker that does not hold the lease.
    assert!(!env.store.record_effect(&live, first).await.unwrap());

    // Job 2: cancelled while running; its attempt can record nothing afterwards.
    let cancelled = claim_one(&env, ids[2], first).await;
    env.store.cancel(ids[2], "test").await.unwrap();
    assert!(!env.store.record_effect(&cancelled, first).await.unwrap());

    let rows = env
        .sql()
        .await
        .query("SELECT job_id, attempt FROM job_effects ORDER BY at", &[])
        .await
        .unwrap();
    let written: Vec<(Uuid, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        written,
        vec![(ids[0], live_one.attempt)],
        "only the live attempt's effect is recorded"
    );
}

/// A claim the database lost in a crash (claims do not wait for the disk) leaves the job
/// `queued` with its attempt count from before, while the worker that made it still
/// runs it. When the same worker claims the job again, the new claim has the same
/// attempt number and the same lease owner as the lost one: the first run must still
/// be fenced out, or both runs of one attempt could record.
async fn a_claim_the_database_lost_and_the_same_worker_made_again_fences_out_the_first_run(
    isolation: IsolationSetting,
) {
    let env = TestEnv::new().await.with_isolation(isolation);
    let worker = Uuid::new_v4();
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"record": true}), 1).await;
    let id = ids[0];
    let lost = claim_one(&env, id, worker).await;
    // What the crash leaves: the row as before the claim (the event may go too; the
    // fence does not read it).
    env.sql()
        .await
        .execute(
            "UPDATE jobs SET state = 'queued', attempt = attempt - 1, lease_owner = NULL,
                 lease_expires_at = NULL, started_at = NULL WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    // The claim is made again after the server's restart: later.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = claim_one(&env, id, worker).await;
    assert_eq!(again.attempt, lost.attempt, "the same attempt number again");
    let store = &env.store;
    let lease = Duration::from_secs(30);
    // Everything the run of the lost claim writes is refused.
    assert!(
        !store.record_effect(&lost, worker).await.unwrap(),
        "the run of the lost claim recorded its effect under the new claim"
    );
    assert!(
        store
            .extend_leases(worker, &[lost], lease)
            .await
            .unwrap()
            .is_empty(),
        "the run of the lost claim extended the new claim's lease"
    );
    store
        .append_log(&lost, worker, "from the lost claim")
        .await
        .unwrap();
    let done = |claim: Claim| Completion {
        id: claim.id,
        attempt: claim.attempt,
        claimed_at: claim.claimed_at,
        max_attempts: 3,
        result: RunResult::Succeeded,
        retry_delay_ms: 0,
    };
    assert!(
        store
            .record_completions(worker, &[done(lost)])
            .await
            .unwrap()
            .is_empty(),
        "the run of the lost claim completed the job"
    );
    assert!(
        store.release(worker, &[lost]).await.unwrap().is_empty(),
        "the run of the lost claim handed the new claim back"
    );
    // The new claim's run records as usual.
    assert!(store.record_effect(&again, worker).await.unwrap());
    assert_eq!(
        store.extend_leases(worker, &[again], lease).await.unwrap(),
        [id]
    );
    assert_eq!(
        store
            .record_completions(worker, &[done(again)])
            .await
            .unwrap(),
        [id]
    );
    let lines: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM job_events WHERE job_id = $1 AND message = 'from the lost claim'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        lines, 0,
        "the run of the lost claim wrote into the job's history"
    );
}

#[tokio::test]
async fn a_non_utf8_hint_is_skipped_and_the_hints_popped_with_it_are_kept() {
    let env = TestEnv::new().await;
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 2).await;
    let key = env.queue.ready_key("default", Priority::Normal);
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // LPUSH adds at the head and pops take from the tail: the junk sits between the two.
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("LPUSH")
        .arg(&key)
        .arg(ids[0].to_string())
        .arg(&b"\xff\xfe not utf-8 \xc3"[..])
        .arg("also-not-a-uuid")
        .arg(ids[1].to_string())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut popper = env.queue.popper().await.unwrap();
    let keys = env.queue.ready_keys("default");
    let (popped_from, hints) = popper
        .pop(&keys, 10, Duration::from_secs(1))
        .await
        .expect("one malformed hint does not break the pop")
        .expect("hints were waiting");
    assert_eq!(popped_from, key);
    assert_eq!(
        hints,
        vec![
            ids[0].to_string(),
            "also-not-a-uuid".to_owned(),
            ids[1].to_string()
        ],
        "the valid hints (and the readable junk, which the claim skips) come back, oldest first"
    );
    let left: i64 = redis::cmd("LLEN")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        left, 0,
        "the malformed hint is gone, not stuck at the head of the list"
    );
    let _ = (
        HintTarget {
            id: ids[0],
            queue: "default".into(),
            priority: Priority::Normal,
        },
        JobState::Queued,
        NewJob::new(JobKind::Noop, json!({})),
    );
}

/// Inbox entries read by a consumer but not acknowledged yet.
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

/// Jobs whose idempotency key starts with `prefix`, read on a fresh connection (the
/// database may just have come back).
async fn keyed_jobs(env: &TestEnv, prefix: &str) -> Option<Vec<Uuid>> {
    let (client, connection) = tokio_postgres::connect(&env.database_url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT id FROM jobs WHERE idempotency_key LIKE $1 || '%'",
            &[&prefix],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|row| row.get(0)).collect())
}

async fn inbox_messages_read_while_the_database_is_down_are_ingested_once_it_is_back(
    isolation: IsolationSetting,
) {
    let pg = PrivatePostgres::start().await;
    let redis = PrivateRedis::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &redis.url())
        .await
        .with_isolation(isolation);
    let worker = env.spawn_worker(env.worker_config());
    env.queue
        .add_inbox(r#"{"kind":"noop","idempotency_key":"warm-up"}"#)
        .await
        .unwrap();
    wait_for(
        "the inbox to be ingested",
        Duration::from_secs(20),
        || async {
            keyed_jobs(&env, "warm-up")
                .await
                .filter(|ids| ids.len() == 1)
        },
    )
    .await;

    pg.crash();
    const N: i64 = 20;
    // In one MULTI/EXEC, so the worker's blocked read gets them all at once.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..N {
        let body = format!(
            r#"{{"kind":"sleep","payload":{{"ms":1,"record":true}},"idempotency_key":"outage-{i}"}}"#
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
    // The worker reads them and fails to store them: they are pending, in Redis only.
    wait_for(
        "the worker to read the messages",
        Duration::from_secs(20),
        || async { (inbox_pending(&env).await == N).then_some(()) },
    )
    .await;
    // An outage longer than the store's retry window (about 2 s), so the worker's
    // first try to store them fails for good.
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg.start_server().await;
    let back = Instant::now();
    let ids = wait_for(
        "the pending messages to be ingested",
        Duration::from_secs(25),
        || async {
            keyed_jobs(&env, "outage-")
                .await
                .filter(|ids| ids.len() as i64 == N)
        },
    )
    .await;
    let took = back.elapsed();
    eprintln!(
        "MEASURED: {N} inbox messages pending during the outage were ingested {took:?} after the database answered again"
    );
    assert!(
        took < Duration::from_secs(10),
        "pending messages were ingested only {took:?} after the database came back"
    );
    // Redis loses everything once they are in the database: nothing is lost.
    redis.flushall().await;
    let states = env.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_started_during_a_database_outage_waits_and_then_works() {
    let pg = PrivatePostgres::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &shared_redis_url()).await;
    pg.crash();
    let mut worker = env.spawn_worker_process(&[]);
    wait_for(
        "the worker to say what it waits for",
        Duration::from_secs(20),
        || async {
            worker
                .log_text()
                .contains("waiting for the database")
                .then_some(())
        },
    )
    .await;
    // It keeps waiting (retrying with backoff) instead of exiting.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            worker.child.try_wait().unwrap().map(|status| status.code()),
            None,
            "the worker exited during the outage; log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.start_server().await;
    let back = Instant::now();
    let producer = env.producer();
    let ids = wait_for("enqueue to work again", Duration::from_secs(20), || async {
        producer
            .enqueue_batch(&vec![
                NewJob::new(JobKind::Noop, json!({"record": true}));
                5
            ])
            .await
            .ok()
            .map(|jobs| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>())
    })
    .await;
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    eprintln!(
        "MEASURED: jobs enqueued after the database came back finished {:?} after it answered",
        back.elapsed()
    );
    let log = worker.log_text();
    assert_eq!(
        log.matches("waiting for the database").count(),
        1,
        "one line per outage, not one per retry; log:\n{log}"
    );
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait(Duration::from_secs(15)), Some(0));
    env.assert_exactly_once(&ids).await;
}

#[tokio::test]
async fn a_database_outage_logs_one_warning_per_component_then_one_back_line() {
    let pg = PrivatePostgres::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &shared_redis_url()).await;
    let worker = env.spawn_worker_process(&[]);
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 20).await;
    env.wait_terminal(&ids, Duration::from_secs(30)).await;
    let before = worker.log_text().lines().count();

    pg.crash();
    // Long enough for every component (fetcher, heartbeat, sweeper, completer, inbox)
    // to fail many times over at the test's intervals (300 ms heartbeat, 200 ms sweep).
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg.start_server().await;
    let more = wait_for("enqueue to work again", Duration::from_secs(20), || async {
        env.producer()
            .enqueue_batch(&vec![NewJob::new(JobKind::Noop, json!({})); 5])
            .await
            .ok()
            .map(|jobs| jobs.into_iter().map(|job| job.id).collect::<Vec<_>>())
    })
    .await;
    env.wait_terminal(&more, Duration::from_secs(30)).await;

    let outage_lines = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .skip(before)
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let field = |line: &serde_json::Value, name: &str| -> String {
        line.get(name)
            .and_then(|value| value.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    // Every component that warned says when the database is back.
    let lines = wait_for(
        "a back line per warned component",
        Duration::from_secs(20),
        || async {
            let lines = outage_lines(&worker.log_text());
            let warned: std::collections::BTreeSet<String> = lines
                .iter()
                .filter(|line| field(line, "level") == "WARN" || field(line, "level") == "ERROR")
                .map(|line| field(line, "component"))
                .collect();
            let back: std::collections::BTreeSet<String> = lines
                .iter()
                .filter(|line| field(line, "message").contains("database is back"))
                .map(|line| field(line, "component"))
                .collect();
            (!warned.is_empty() && warned.is_subset(&back)).then_some(lines)
        },
    )
    .await;
    let noisy: Vec<String> = lines
        .iter()
        .filter(|line| field(line, "level") == "WARN" || field(line, "level") == "ERROR")
        .map(|line| {
            format!(
                "{} {}: {}",
                field(line, "level"),
                field(line, "component"),
                field(line, "message")
            )
        })
        .collect();
    let mut per_component = std::collections::BTreeMap::<String, usize>::new();
    for line in &lines {
        if field(line, "level") == "WARN" || field(line, "level") == "ERROR" {
            *per_component.entry(field(line, "component")).or_default() += 1;
        }
    }
    eprintln!(
        "MEASURED: {} warning/error lines during a 6 s outage: {per_component:?}",
        noisy.len()
    );
    assert!(
        per_component
            .iter()
            .all(|(component, count)| !component.is_empty() && *count == 1),
        "one warning per outage and component, each naming its component; got {}:\n{}",
        noisy.len(),
        noisy.join("\n")
    );
    let all = worker.log_text();
    assert!(
        !all.contains("could not be recycled"),
        "pool noise in the log"
    );
    assert!(!all.contains("Connection error"), "pool noise in the log");
}

/// `lc` as a child process against `env`, not waited for.
fn spawn_lc(env: &TestEnv, args: &[&str]) -> std::process::Child {
    std::process::Command::new(lc_tests::bin("lc"))
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .env("LC_ISOLATION", env.isolation_arg())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

async fn lc_enqueue_waits_out_a_database_restart_and_makes_one_job(isolation: IsolationSetting) {
    let pg = PrivatePostgres::start().await;
    let env = TestEnv::with_services(&pg.admin_url(), &shared_redis_url())
        .await
        .with_isolation(isolation);
    pg.crash();
    // Default settings: no flag needed to ride out a restart of a few seconds.
    let enqueue = spawn_lc(&env, &["enqueue", "noop"]);
    // Down for longer than the store's own quick retries (about 2 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    pg.start_server().await;
    let output = tokio::task::spawn_blocking(move || enqueue.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "lc enqueue failed during a restart: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id: Uuid = stdout.trim().parse().expect("the job id");
    assert_eq!(env.job_count().await, 1, "exactly one job");
    assert!(env.store.job(id).await.unwrap().is_some());

    // A bounded wait: with the database down for good it gives up after --retry-for.
    pg.crash();
    let started = Instant::now();
    let enqueue = spawn_lc(&env, &["enqueue", "noop", "--retry-for", "1s"]);
    let output = tokio::task::spawn_blocking(move || enqueue.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up after {:?}",
        started.elapsed()
    );
    pg.start_server().await;
    assert_eq!(env.job_count().await, 1, "the failed enqueue made nothing");
}

#[tokio::test]
async fn an_enqueue_replayed_with_the_same_job_id_finds_the_first_job() {
    let env = TestEnv::new().await;
    let id = Uuid::new_v4();
    let job = NewJob::new(JobKind::Noop, json!({})).with_id(id);
    let first = env.producer().enqueue(job.clone()).await.unwrap();
    assert_eq!((first.id, first.created), (id, true));
    let again = env.producer().enqueue(job).await.unwrap();
    assert_eq!((again.id, again.created), (id, false));
    assert_eq!(env.job_count().await, 1);
    // An id and an idempotency key that both exist: still the one job.
    let keyed = NewJob::new(JobKind::Noop, json!({})).with_idempotency_key("k-1");
    let made = env.producer().enqueue(keyed.clone()).await.unwrap();
    let replay = env
        .producer()
        .enqueue(keyed.with_id(made.id))
        .await
        .unwrap();
    assert_eq!((replay.id, replay.created), (made.id, false));
    assert_eq!(env.job_count().await, 2);
}

#[tokio::test]
async fn a_handler_past_its_time_limit_is_stopped_and_fails_as_retryable() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    // A limit set by the library, by `lc enqueue --timeout` and by the inbox's envelope.
    let hung = env
        .producer()
        .enqueue(
            NewJob::new(JobKind::Sleep, json!({"ms": 60_000, "record": true}))
                .with_timeout(Duration::from_millis(300))
                .with_max_attempts(2),
        )
        .await
        .unwrap()
        .id;
    let (code, out, err) = env.lc(&[
        "enqueue",
        "sleep",
        "--payload",
        r#"{"ms": 60000}"#,
        "--timeout",
        "400ms",
        "--max-attempts",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let from_cli: Uuid = out.trim().parse().unwrap();
    env.queue
        .add_inbox(r#"{"kind":"sleep","payload":{"ms":60000},"timeout":"500ms","max_attempts":1,"idempotency_key":"hung"}"#)
        .await
        .unwrap();
    let from_inbox = wait_for(
        "the inbox message to be a job",
        Duration::from_secs(20),
        || async {
            keyed_jobs(&env, "hung")
                .await
                .and_then(|ids| ids.first().copied())
        },
    )
    .await;
    let ids = [hung, from_cli, from_inbox];
    // Long before the 60 s sleeps could end.
    let states = env.wait_terminal(&ids, Duration::from_secs(20)).await;
    assert!(
        states.values().all(|state| *state == JobState::Dead),
        "{states:?}"
    );
    for (id, limit) in ids.iter().zip(["300ms", "400ms", "500ms"]) {
        let job = env.store.job(*id).await.unwrap().unwrap();
        assert_eq!(
            job.last_error.as_deref(),
            Some(format!("timed out after {limit}").as_str())
        );
    }
    // The first went through both attempts: retryable, not fatal.
    let events = env.store.events(hung).await.unwrap();
    let changes: Vec<_> = events.iter().filter_map(|event| event.to_state).collect();
    assert_eq!(changes, ["queued", "running", "queued", "running", "dead"]);
    env.assert_exactly_once(&ids).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_kind_past_its_time_limit_has_its_child_processes_killed() {
    let env = TestEnv::new().await;
    let mut config = env.worker_config();
    // docker-machine's own limit is far away: the job's limit is what stops it.
    config.machines.machine_timeout = Duration::from_secs(120);
    config
        .machines
        .machine_env
        .push("STANDIN_HANG=create".to_owned());
    config.kind_timeouts = vec![(
        <lc_deployment::kinds::ProvisionMachine as lc_shared::kind::JobType>::KIND.to_string(),
        // 6 s rather than less: on 2 loaded cores the stand-in must reach its hang
        // before the limit ends the call.
        Duration::from_secs(6),
    )];
    let worker = env.spawn_worker(config.clone());
    let name = format!("limit-{}", &env.prefix[1..9]);
    let spec = format!(
        "name: {name}\nowner: tests\nnodes: 1\n\
         provider: {{kind: docker-machine, driver: none, driver_flags: {{url: '{}'}}}}\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         max_attempts: 1\n",
        std::env::var("DOCKER_HOST").expect("DOCKER_HOST names the test engine"),
        std::env::var("LC_IMAGE").unwrap_or_else(|_| "lc-busybox:latest".to_owned()),
    );
    let path = std::env::temp_dir().join(format!("lc-spec-{}.yaml", env.prefix));
    std::fs::write(&path, spec).unwrap();
    let (code, out, err) = env.lc(&["deploy", "create", path.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let deployment: Uuid = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The stand-in's records (its stores are scratch directories per call).
    let standin = env.standin_dir();
    let read_pid = |file: &str| -> Option<i32> {
        std::fs::read_to_string(standin.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let alive = |pid: i32| -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    // The hang has begun once both pid files are there.
    let (child, parent) = wait_for("the create to hang", Duration::from_secs(30), || async {
        Some((read_pid("hang-child.pid")?, read_pid("hang.pid")?))
    })
    .await;
    let hung = Instant::now();
    wait_for(
        "the hung call's processes to be killed",
        Duration::from_secs(15),
        || async { (!alive(child) && !alive(parent)).then_some(()) },
    )
    .await;
    eprintln!(
        "MEASURED: hung create killed {:?} after it hung (job limit 6 s)",
        hung.elapsed()
    );
    let job: Uuid = wait_for(
        "the provision_machine job to fail",
        Duration::from_secs(30),
        || async {
            let rows = env
                .sql()
                .await
                .query(
                    "SELECT id FROM jobs WHERE group_id = $1 AND kind = 'provision_machine'
                   AND last_error LIKE 'timed out after%'",
                    &[&deployment],
                )
                .await
                .ok()?;
            rows.first().map(|row| row.get(0))
        },
    )
    .await;
    let row = env.store.job(job).await.unwrap().unwrap();
    assert_eq!(row.last_error.as_deref(), Some("timed out after 6s"));
    let (code, _, err) = env.lc(&["deploy", "teardown", &name]);
    assert_eq!(code, 0, "{err}");
    worker.stop().await;
}
