//! Group commit for single enqueues: concurrent [`crate::Producer::enqueue`] calls on
//! one producer share one multi-row insert and one commit.
//!
//! There is no timer. A call that finds a flush slot free goes out at once, alone or
//! with whatever calls are already waiting (a lone call pays no extra wait); calls that
//! arrive while every slot is busy wait for the first slot to free, at most one
//! commit's time, and then go out together, up to [`MAX_JOBS`] in one statement. Each
//! caller gets its own answer. When the database refuses a shared statement, its halves
//! are tried again apart, down to the job that causes it, so an error reaches only the
//! caller whose job causes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lc_shared::NewJob;
use lc_shared::dispatch::Dispatch;
use lc_shared::store::{Enqueued, HintTarget, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Most jobs in one shared statement.
pub const MAX_JOBS: usize = 256;

/// Flushes in flight at once: statements on their way to a commit. While all are
/// busy, new calls gather into the next one.
pub const MAX_IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Enqueued, StoreError>>;

struct Request {
    job: NewJob,
    reply: Reply,
}

/// The handle callers hold; the flushing task ends when the last handle is dropped.
pub(crate) struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
}

/// What a flush needs.
#[derive(Clone)]
struct Target {
    store: Store,
    /// Whether hints can go out now: jobs are then marked dispatched as they are made.
    hints: bool,
    dispatch: Dispatch,
    retry_for: Duration,
}

impl GroupCommit {
    /// Starts the flushing task on the current Tokio runtime.
    pub(crate) fn start(
        store: Store,
        hints: bool,
        dispatch: Dispatch,
        retry_for: Duration,
    ) -> GroupCommit {
        let (requests, receiver) = mpsc::unbounded_channel();
        let target = Target {
            store,
            hints,
            dispatch,
            retry_for,
        };
        tokio::spawn(gather(target, receiver));
        GroupCommit { requests }
    }

    /// Enqueues one validated job with whatever other calls are waiting.
    pub(crate) async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { job, reply })
            .map_err(|_| StoreError::Invalid("the producer's enqueue task stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Invalid("the producer's enqueue task stopped".into()))?
    }
}

async fn gather(target: Target, mut requests: mpsc::UnboundedReceiver<Request>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        // Wait for a slot before gathering, so the batch takes in every call that
        // arrived meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_JOBS {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let target = target.clone();
        tokio::spawn(async move {
            flush(&target, batch).await;
            drop(slot);
        });
    }
}

async fn flush(target: &Target, batch: Vec<Request>) {
    let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = batch
        .into_iter()
        .map(|request| (request.job, request.reply))
        .unzip();
    // Ids chosen once, so that a later try of part of the group finds a job an
    // earlier try made.
    let ids = lc_shared::store::job_ids(&jobs);
    let deadline = Instant::now() + target.retry_for;
    insert(target, &jobs, &ids, replies, false, deadline).await;
}

/// Inserts `jobs` in one statement and answers each caller. When the database refuses
/// the statement, each half is tried on its own, down to the one job that causes the
/// refusal, so that only its caller gets the error (a few more statements, not one
/// per job).
fn insert<'a>(
    target: &'a Target,
    jobs: &'a [NewJob],
    ids: &'a [Uuid],
    mut replies: Vec<Reply>,
    may_have_committed: bool,
    deadline: Instant,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        let budget = deadline.saturating_duration_since(Instant::now());
        let answer = target
            .store
            .enqueue_with_ids(jobs, ids, target.hints, budget, may_have_committed)
            .await;
        match answer {
            Ok(enqueued) => {
                send_hints(target, &enqueued).await;
                for (reply, answer) in replies.into_iter().zip(enqueued) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(err) if jobs.len() == 1 => {
                if let Some(reply) = replies.pop() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(err) => {
                // A refused statement committed nothing; anything else may have.
                let may_have_committed = may_have_committed || !err.is_rejected();
                let half = jobs.len() / 2;
                let second = replies.split_off(half);
                tokio::join!(
                    insert(
                        target,
                        &jobs[..half],
                        &ids[..half],
                        replies,
                        may_have_committed,
                        deadline
                    ),
                    insert(
                        target,
                        &jobs[half..],
                        &ids[half..],
                        second,
                        may_have_committed,
                        deadline
                    ),
                );
            }
        }
    })
}

async fn send_hints(target: &Target, enqueued: &[Enqueued]) {
    let hints: Vec<HintTarget> = enqueued.iter().filter_map(|job| job.hint.clone()).collect();
    target.dispatch.send(&hints).await;
}
