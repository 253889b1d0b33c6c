//! Faults an operator's bad day brings (issue 9): a database down while inbox
//! messages arrive, stale attempts that wake up, junk hints, workers and `lc enqueue`
//! started during an outage, the log lines an outage leaves, hung handlers, and a
//! PostgreSQL crash in the middle of a run.

use std::time::Duration;

use lc_shared::store::HintTarget;
use lc_shared::{JobKind, JobState, NewJob, Priority};
use lc_tests::{TestEnv, enqueue_many};
use serde_json::json;
use uuid::Uuid;

/// Claims one job for `worker`, by hand, as a fetcher would.
async fn claim_one(env: &TestEnv, id: Uuid, worker: Uuid) -> i64 {
    let claimed = env
        .store
        .claim_by_ids(&[id], worker, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "job {id} claimed");
    claimed[0].attempt
}

#[tokio::test]
async fn effects_of_an_attempt_that_is_not_live_are_not_recorded() {
    let env = TestEnv::new().await;
    let first = Uuid::new_v4();
    let second = Uuid::new_v4();
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"record": true}), 3).await;

    // Attempt 1 of job 0 is live: its effect counts.
    let attempt = claim_one(&env, ids[0], first).await;
    assert!(
        env.store
            .record_effect(ids[0], attempt, first)
            .await
            .unwrap()
    );

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
    env.store.expire_leases(100).await.unwrap();
    let live = claim_one(&env, ids[1], second).await;
    assert_eq!(live, stale + 1);
    assert!(!env.store.record_effect(ids[1], stale, first).await.unwrap());
    // The same attempt number, but written by a worker that does not hold the lease.
    assert!(!env.store.record_effect(ids[1], live, first).await.unwrap());

    // Job 2: cancelled while running; its attempt can record nothing afterwards.
    let cancelled = claim_one(&env, ids[2], first).await;
    env.store.cancel(ids[2], "test").await.unwrap();
    assert!(
        !env.store
            .record_effect(ids[2], cancelled, first)
            .await
            .unwrap()
    );

    let rows = env
        .sql()
        .await
        .query("SELECT job_id, attempt FROM job_effects ORDER BY at", &[])
        .await
        .unwrap();
    let written: Vec<(Uuid, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(
        written,
        vec![(ids[0], attempt)],
        "only the live attempt's effect is recorded"
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
