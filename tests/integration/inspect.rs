//! The read API itself (`lc_producer::Inspector`, the reads of
//! `lc_deployment::Deployments`), where the `lc` tests do not reach: cursor pages while
//! jobs are being added, typed errors (not found, conflict, invalid), and a running
//! job measured against its kind's time limit.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lc_deployment::DeploymentState;
use lc_producer::ErrorKind;
use lc_producer::inspect::{JobListParams, PurgeParams, RequeueParams, StuckParams};
use lc_shared::store::WorkerInfo;
use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::{TestEnv, enqueue_many, wait_for};
use serde_json::json;
use uuid::Uuid;

/// Walks every page of `params` (newest first) while another task keeps enqueueing
/// jobs, and waits for more of them to arrive between pages: the jobs that were there
/// before the walk come back exactly once, and no job comes back twice.
#[tokio::test]
async fn pages_neither_skip_nor_repeat_while_jobs_are_added() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    // One batch (one commit: every job has the same created_at, so pages split ties)
    // and single enqueues (commits of their own).
    let mut before: Vec<Uuid> = enqueue_many(&env, JobKind::Noop, json!({}), 120).await;
    for _ in 0..40 {
        before.push(
            producer
                .enqueue(NewJob::new(JobKind::Noop, json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    before.extend(enqueue_many(&env, JobKind::Noop, json!({}), 60).await);

    let added = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let adder = {
        let (producer, added, stop) = (producer.clone(), added.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !stop.is_cancelled() {
                // Singles and small batches, some at once (one group commit).
                let batch = vec![NewJob::new(JobKind::Noop, json!({})); 3];
                let (single, many) = tokio::join!(
                    producer.enqueue(NewJob::new(JobKind::Noop, json!({}))),
                    producer.enqueue_batch(&batch),
                );
                ids.push(single.unwrap().id);
                ids.extend(many.unwrap().into_iter().map(|job| job.id));
                added.store(ids.len(), Ordering::SeqCst);
            }
            ids
        })
    };

    let inspector = producer.inspector();
    let mut params = JobListParams {
        limit: 37,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = inspector.jobs(&params).await.unwrap();
        assert!(page.jobs.len() <= 37);
        pages += 1;
        assert!(pages < 50, "the walk does not end: pages repeat");
        seen.extend(page.jobs.iter().map(|job| job.id));
        let Some(next) = page.next else { break };
        // More jobs arrive before the next page is read.
        let so_far = added.load(Ordering::SeqCst);
        wait_for("more jobs to be added", Duration::from_secs(20), || async {
            (added.load(Ordering::SeqCst) >= so_far + 8).then_some(())
        })
        .await;
        params.cursor = Some(next);
    }
    stop.cancel();
    let during: HashSet<Uuid> = adder.await.unwrap().into_iter().collect();

    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a job came back twice");
    let missing: Vec<&Uuid> = before.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "skipped: {missing:?}");
    assert!(
        unique
            .iter()
            .all(|id| before.contains(id) || during.contains(id)),
        "a job from nowhere"
    );
    assert!(pages >= 6, "{pages} pages");
    assert!(during.len() >= 8 * (pages - 1), "jobs were added meanwhile");
}

/// Filters and the cursor together, and through `lc jobs ls`.
#[tokio::test]
async fn filtered_pages_and_the_cursor_of_lc_jobs_ls() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(
            producer
                .enqueue(NewJob::new(JobKind::Noop, json!({})).with_queue("pages"))
                .await
                .unwrap()
                .id,
        );
        enqueue_many(&env, JobKind::Noop, json!({}), 2).await;
    }
    mine.reverse(); // newest first
    let inspector = producer.inspector();
    let params = JobListParams {
        queue: Some("pages".into()),
        limit: 2,
        ..Default::default()
    };
    let first = inspector.jobs(&params).await.unwrap();
    let ids: Vec<Uuid> = first.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, mine[..2]);
    let second = inspector
        .jobs(&JobListParams {
            cursor: first.next.clone(),
            ..params.clone()
        })
        .await
        .unwrap();
    let ids: Vec<Uuid> = second.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, mine[2..4]);
    let last = inspector
        .jobs(&JobListParams {
            cursor: second.next.clone(),
            ..params.clone()
        })
        .await
        .unwrap();
    assert_eq!(last.jobs.len(), 1);
    assert_eq!(last.next, None, "an exact last page has no next");

    // `lc jobs ls` prints the cursor on stderr and takes it back.
    let (code, out, err) = env.lc(&["jobs", "ls", "--queue", "pages", "--limit", "2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], json!(mine[0].to_string()));
    let cursor = err
        .trim()
        .strip_prefix("more jobs follow: --cursor ")
        .unwrap_or_else(|| panic!("no cursor in {err:?}"));
    let (code, out, _) = env.lc(&[
        "jobs", "ls", "--queue", "pages", "--limit", "2", "--cursor", cursor, "--json",
    ]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"], json!(mine[2].to_string()));
    let (code, _, err) = env.lc(&["jobs", "ls", "--cursor", "not-a-cursor"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid cursor"), "{err}");
}

#[tokio::test]
async fn errors_say_not_found_conflict_or_invalid() {
    let env = TestEnv::new().await;
    let inspector = env.producer().inspector();
    let nobody = Uuid::new_v4();
    let kind = |err: lc_producer::InspectError| err.kind();
    assert_eq!(
        kind(inspector.job(nobody).await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        inspector.job(nobody).await.unwrap_err().to_string(),
        format!("no job {nobody}")
    );
    assert_eq!(
        kind(inspector.cancel(nobody).await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(inspector.retry(nobody).await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(
            inspector
                .requeue(nobody, RequeueParams::default())
                .await
                .unwrap_err()
        ),
        ErrorKind::NotFound
    );

    // A queued job: not retryable, not requeueable, cancellable once.
    let id = enqueue_many(&env, JobKind::Noop, json!({}), 1).await[0];
    assert_eq!(
        kind(inspector.retry(id).await.unwrap_err()),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(
            inspector
                .requeue(id, RequeueParams::default())
                .await
                .unwrap_err()
        ),
        ErrorKind::Conflict
    );
    let cancelled = inspector.cancel(id).await.unwrap();
    assert_eq!(
        (cancelled.was, cancelled.state),
        (JobState::Queued, JobState::Cancelled)
    );
    let again = inspector.cancel(id).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert_eq!(
        again.to_string(),
        format!("job {id} is already cancelled; nothing to cancel")
    );
    let detail = inspector.job(id).await.unwrap();
    assert_eq!(detail.job.state, JobState::Cancelled);
    assert_eq!(detail.events.len(), 2, "enqueued, then cancelled");

    // Requests that are wrong in themselves.
    let bad_cursor = JobListParams {
        cursor: Some("AAAA".into()),
        ..Default::default()
    };
    assert_eq!(
        kind(inspector.jobs(&bad_cursor).await.unwrap_err()),
        ErrorKind::Invalid
    );
    let purge_live = PurgeParams {
        state: JobState::Queued,
        older_than: Duration::ZERO,
        batch: 10,
    };
    assert_eq!(
        kind(inspector.purge(purge_live).await.unwrap_err()),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(
            inspector
                .retry_all(JobState::Running, None)
                .await
                .unwrap_err()
        ),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(inspector.pause_queue("Not A Queue").await.unwrap_err()),
        ErrorKind::Invalid
    );

    // Deployments: a name or id that names nothing is not found, once resolved or later.
    let deployments = env.deployments();
    for name in ["nothing-here", &nobody.to_string()] {
        let err = deployments.resolve(name).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{name}");
        assert_eq!(err.to_string(), format!("no deployment {name}"));
    }
    assert_eq!(
        deployments.get(nobody, 20).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let waited = deployments
        .wait(nobody, DeploymentState::Deployed, Duration::from_secs(1))
        .await;
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(deployments.list(true, 10).await.unwrap().is_empty());
}

/// A running job counts as stuck once it runs past its own time limit, else its
/// kind's declared one, by more than `older_than`; never by its kind's name.
#[tokio::test]
async fn running_jobs_are_measured_against_their_time_limit() {
    let env = TestEnv::new().await;
    let worker = Uuid::new_v4();
    env.store
        .register_worker(&WorkerInfo {
            id: worker,
            host: "test".into(),
            pid: 1,
            queues: vec!["default".into()],
            concurrency: 4,
            version: "test".into(),
        })
        .await
        .unwrap();
    let producer = env.producer();
    let noop = producer
        .enqueue(NewJob::new(JobKind::Noop, json!({})))
        .await
        .unwrap()
        .id;
    let sleep = producer
        .enqueue(NewJob::new(JobKind::Sleep, json!({"ms": 1})))
        .await
        .unwrap()
        .id;
    let own_limit = producer
        .enqueue(NewJob::new(JobKind::Noop, json!({})).with_timeout(Duration::from_secs(600)))
        .await
        .unwrap()
        .id;
    // All three have run for two minutes under the live worker's lease.
    env.sql()
        .await
        .execute(
            "UPDATE jobs SET state = 'running', attempt = 1, lease_owner = $2,
                 lease_expires_at = now() + INTERVAL '1 hour',
                 started_at = now() - INTERVAL '2 minutes'
             WHERE id = ANY($1)",
            &[&vec![noop, sleep, own_limit], &worker],
        )
        .await
        .unwrap();
    let params = StuckParams {
        older_than: Duration::from_secs(30),
        dead_after: Duration::from_secs(3600),
    };
    let findings = producer.inspector().stuck_jobs(&params).await.unwrap();
    let ids: Vec<Option<Uuid>> = findings.iter().map(|finding| finding.job_id).collect();
    assert_eq!(ids, [Some(noop)], "{findings:?}");
    assert!(
        findings[0].reason.contains("expected at most 1m for noop"),
        "{findings:?}"
    );
    assert_eq!(
        findings[0].fix,
        format!("lc jobs show {noop} ; lc jobs cancel {noop}")
    );
}
