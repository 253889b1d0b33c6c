//! Group commit: concurrent single enqueues on one producer share statements and
//! commits, and each caller still gets its own answer and its own error.

use std::collections::HashSet;
use std::time::Duration;

use lc_producer::ProducerError;
use lc_shared::store::IsolationSetting;
use lc_shared::{JobKind, NewJob};
use lc_tests::TestEnv;
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

/// What each concurrent call asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Plain,
    SameKey,
    ChosenId(Uuid),
    /// Refused by validation (before it joins a group).
    Invalid,
    /// Passes validation but the database refuses it (a NUL in a TEXT column).
    RefusedByDatabase,
}

fn job(ask: Ask) -> NewJob {
    let job = NewJob::new(JobKind::Noop, json!({}));
    match ask {
        Ask::Plain => job,
        Ask::SameKey => job.with_idempotency_key("burst-key"),
        Ask::ChosenId(id) => job.with_id(id),
        Ask::Invalid => job.with_max_attempts(0),
        Ask::RefusedByDatabase => job.with_idempotency_key("nul\u{0}key"),
    }
}

#[tokio::test]
async fn concurrent_enqueues_share_commits_and_each_caller_gets_its_own_answer() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    // An id that exists already: enqueueing it again returns that job.
    let taken = Uuid::new_v4();
    assert!(
        producer
            .enqueue(job(Ask::ChosenId(taken)))
            .await
            .unwrap()
            .created
    );
    let fresh = Uuid::new_v4();
    let mut asks = vec![Ask::Plain; 300];
    asks[10] = Ask::Invalid;
    asks[20] = Ask::RefusedByDatabase;
    asks[30] = Ask::ChosenId(taken);
    asks[40] = Ask::ChosenId(fresh);
    for index in [50, 60, 70, 80] {
        asks[index] = Ask::SameKey;
    }

    let mut calls = JoinSet::new();
    for (index, ask) in asks.iter().copied().enumerate() {
        let producer = producer.clone();
        calls.spawn(async move { (index, ask, producer.enqueue(job(ask)).await) });
    }
    let mut created = Vec::new();
    let mut keyed = Vec::new();
    while let Some(joined) = calls.join_next().await {
        let (index, ask, answer) = joined.unwrap();
        match ask {
            Ask::Plain => {
                let enqueued = answer.unwrap_or_else(|err| panic!("call {index}: {err}"));
                assert!(enqueued.created);
                created.push(enqueued.id);
            }
            Ask::Invalid => assert!(
                matches!(answer, Err(ProducerError::Invalid(_))),
                "{answer:?}"
            ),
            Ask::RefusedByDatabase => {
                assert!(matches!(answer, Err(ProducerError::Store(_))), "{answer:?}")
            }
            Ask::ChosenId(id) => {
                let enqueued = answer.unwrap();
                assert_eq!(enqueued.id, id);
                assert_eq!(enqueued.created, id == fresh);
                if id == fresh {
                    created.push(id);
                }
            }
            Ask::SameKey => keyed.push(answer.unwrap()),
        }
    }
    // One job for the four calls with one key: one of them made it.
    assert_eq!(keyed.iter().filter(|enqueued| enqueued.created).count(), 1);
    assert_eq!(
        keyed
            .iter()
            .map(|enqueued| enqueued.id)
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    created.push(keyed[0].id);
    let distinct: HashSet<Uuid> = created.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        created.len(),
        "every created job is its own"
    );
    // 292 plain jobs, the fresh id and the keyed one from the burst, plus the one made
    // first.
    assert_eq!(created.len(), 294);
    assert_eq!(env.job_count().await, 295);

    // Jobs of one transaction share its start time (`created_at = now()`): far fewer
    // commits than calls.
    let commits: i64 = env
        .sql()
        .await
        .query_one(
            "SELECT count(DISTINCT created_at) FROM jobs WHERE id = ANY($1)",
            &[&created],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        commits < 100,
        "{commits} commits for {} jobs: not grouped",
        created.len()
    );
}

#[tokio::test]
async fn a_lone_enqueue_and_transactional_enqueues_keep_their_meaning() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let first = producer.enqueue(job(Ask::SameKey)).await.unwrap();
    let again = producer.enqueue(job(Ask::SameKey)).await.unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.id, again.id);

    // A transactional enqueue does not go through the group: rolled back, it is gone.
    let mut client = env.store.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let enqueued = producer
        .enqueue_in_transaction(&tx, &[job(Ask::Plain)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(env.store.job(enqueued[0].id).await.unwrap().is_none());
    assert_eq!(env.job_count().await, 1);
}

/// Single enqueues answer at the commit and send their hints from a background task;
/// `flush_hints` returns once every one is in Redis, including the hints of a producer
/// made from this one (`with_retry_for` starts a group commit of its own).
#[tokio::test]
async fn flush_hints_returns_once_every_hint_is_in_redis() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let flushed_job = || NewJob::new(JobKind::Noop, json!({})).with_queue("flushed");

    producer.enqueue(flushed_job()).await.unwrap();
    producer.flush_hints().await;
    assert_eq!(env.queue.ready_len("flushed").await.unwrap(), 1);

    let made_from_it = producer.clone().with_retry_for(Duration::from_secs(5));
    let mut calls = JoinSet::new();
    for index in 0..200 {
        let producer = if index % 2 == 0 {
            producer.clone()
        } else {
            made_from_it.clone()
        };
        calls.spawn(async move { producer.enqueue(flushed_job()).await.unwrap() });
    }
    while let Some(call) = calls.join_next().await {
        assert!(call.unwrap().created);
    }
    producer.flush_hints().await;
    assert_eq!(env.queue.ready_len("flushed").await.unwrap(), 201);
}

/// On PostgreSQL at read committed, new job ids are UUIDv7 (time first: inserts land
/// on the primary key's newest page), single and batch alike; under `--isolation
/// serializable` they stay random (see `Store::id_order`). An id the caller chose is
/// kept under both.
#[tokio::test]
async fn new_job_ids_are_time_ordered_on_postgresql() {
    for isolation in [
        IsolationSetting::ReadCommitted,
        IsolationSetting::Serializable,
    ] {
        let env = TestEnv::new().await.with_isolation(isolation);
        let producer = env.producer();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(producer.enqueue(job(Ask::Plain)).await.unwrap().id);
        }
        let batch = producer
            .enqueue_batch(&[job(Ask::Plain), job(Ask::Plain)])
            .await
            .unwrap();
        ids.extend(batch.iter().map(|enqueued| enqueued.id));
        let chosen = Uuid::new_v4();
        let kept = producer.enqueue(job(Ask::ChosenId(chosen))).await.unwrap();
        assert_eq!(kept.id, chosen, "{isolation:?}");

        let version = match isolation {
            IsolationSetting::ReadCommitted => uuid::Version::SortRand,
            IsolationSetting::Serializable => uuid::Version::Random,
        };
        for id in &ids {
            assert_eq!(id.get_version(), Some(version), "{isolation:?}: {id}");
        }
        if isolation == IsolationSetting::ReadCommitted {
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "made one after another, in order");
        }
    }
}
