//! The queue on a 3-node Redis Cluster: every key of a queue carries a hash tag, so
//! pipelines and blocking pops stay in one slot; several queues spread over shards.

use std::time::Duration;

use lc_shared::{JobKind, JobState, NewJob, Priority};
use lc_tests::{PrivateRedisCluster, TestEnv, wait_for};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn queues_inbox_and_rebuild_work_on_a_redis_cluster() {
    let cluster = PrivateRedisCluster::start().await;
    let env = TestEnv::with_redis(&cluster.url()).await;
    assert!(env.queue.is_cluster());
    let mut config = env.worker_config();
    let queues = ["alpha", "beta", "gamma", "delta"];
    config.queues = queues.iter().map(|queue| (*queue).to_owned()).collect();
    let workers = [env.spawn_worker(config.clone()), env.spawn_worker(config)];

    // Several queues (their hash tags land on different shards) and all priorities,
    // enqueued in one batch: one pipeline per queue.
    let jobs: Vec<NewJob> = (0..400)
        .map(|n| {
            NewJob::new(JobKind::Sleep, json!({"ms": 1, "record": true}))
                .with_queue(queues[n % queues.len()])
                .with_priority(Priority::ALL[n % 3])
        })
        .collect();
    let ids: Vec<Uuid> = env
        .producer()
        .enqueue_batch(&jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    env.wait_terminal(&ids, Duration::from_secs(60)).await;

    // The inbox stream works through the cluster too.
    env.queue
        .add_inbox(r#"{"kind":"noop","queue":"beta","idempotency_key":"cluster-inbox"}"#)
        .await
        .unwrap();
    let inboxed: Uuid = wait_for("the inbox job", Duration::from_secs(20), || async {
        let row = env
            .sql()
            .await
            .query_opt("SELECT id FROM jobs WHERE idempotency_key = 'cluster-inbox' AND state = 'succeeded'", &[])
            .await
            .unwrap();
        row.map(|row| row.get(0))
    })
    .await;

    // Data loss on every shard: markers vanish, queues are rebuilt, nothing is lost.
    let more: Vec<Uuid> = {
        let jobs: Vec<NewJob> = (0..200)
            .map(|n| {
                NewJob::new(JobKind::Sleep, json!({"ms": 2, "record": true}))
                    .with_queue(queues[n % queues.len()])
            })
            .collect();
        env.producer()
            .enqueue_batch(&jobs)
            .await
            .unwrap()
            .into_iter()
            .map(|job| job.id)
            .collect()
    };
    cluster.flushall().await;
    env.wait_terminal(&more, Duration::from_secs(60)).await;
    for queue in queues {
        wait_for("markers rebuilt", Duration::from_secs(10), || async {
            env.queue
                .has_marker(queue)
                .await
                .ok()
                .filter(|found| *found)
        })
        .await;
    }
    for worker in workers {
        worker.stop().await;
    }
    let all: Vec<Uuid> = ids.iter().chain(&more).copied().chain([inboxed]).collect();
    env.assert_exactly_once(&all).await;
    let states = env.states(&all).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
}
