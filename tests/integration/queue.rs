//! The queue core: enqueue, claim, retry, cancel, shutdown, crashes, bad input.

use std::time::Duration;

use lc_shared::{JobKind, JobState, NewJob, Priority};
use lc_tests::{TestEnv, enqueue_many};
use serde_json::json;

#[tokio::test]
async fn jobs_run_once_and_record_their_history() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let ids = enqueue_many(&env, JobKind::Sleep, json!({"ms": 10, "record": true}), 50).await;
    let states = env.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(states.values().all(|state| *state == JobState::Succeeded));
    env.assert_exactly_once(&ids).await;
    let events = env.store.events(ids[0]).await.unwrap();
    let changes: Vec<_> = events.iter().filter_map(|event| event.to_state.clone()).collect();
    assert_eq!(changes, ["queued", "running", "succeeded"]);
    worker.stop().await;
}
