//! Group commit for single enqueues: concurrent [`crate::Producer::enqueue`] calls on
//! one producer share one multi-row insert and one commit.
//!
//! There is no timer. A call that finds nothing in flight goes out at once, from the
//! caller's own task (a lone call pays no extra wait and no hand-off between tasks);
//! calls that arrive while a flush is in flight go to the gathering task, which sends
//! them out as soon as a flush slot is free, together with every call that arrived
//! meanwhile: at most one commit's wait, up to [`MAX_JOBS`] in one statement. Each
//! caller gets its own answer once its commit is in; its hint goes to Redis from a
//! background task meanwhile (`HintsInFlight`), so the Redis round trip is paid by
//! neither the caller nor the next statement. When the database refuses a shared
//! statement, its halves are tried again apart, down to the job that causes it, so an
//! error reaches only the caller whose job causes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lc_shared::NewJob;
use lc_shared::dispatch::Dispatch;
use lc_shared::store::{Enqueued, HintTarget, Store, StoreError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use uuid::Uuid;

/// Most jobs in one shared statement.
pub const MAX_JOBS: usize = 256;

/// Scheduler turns the gathering task gives callers to send their next job, while each
/// turn still brings more.
const GATHER_TURNS: usize = 4;

/// Flushes in flight at once: statements on their way to a commit. While all are
/// busy, new calls gather into the next one. Measured with 32 concurrent callers on 2
/// cores: one in flight gathers 20–30 jobs per commit and enqueues 23–28k jobs/s; two,
/// 18–26k; four, 15–20k; eight, 13k (smaller statements, more commits, the database's
/// CPU spent per commit rather than per job).
pub const MAX_IN_FLIGHT: usize = 1;

type Reply = oneshot::Sender<Result<Enqueued, StoreError>>;

struct Request {
    job: NewJob,
    reply: Reply,
}

/// The handle callers hold; the flushing task ends when the last handle is dropped.
pub(crate) struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
    /// Flushes in flight, inline ones included: at most [`MAX_IN_FLIGHT`] at once.
    slots: Arc<Semaphore>,
    /// Calls handed to the gathering task and not yet taken into a statement.
    waiting: Arc<AtomicUsize>,
    /// Jobs in the last statement that went out: above one, callers are concurrent,
    /// and a call that finds nothing in flight is most likely the first of the next
    /// round, so it gathers with the rest instead of going out alone ahead of them.
    last_batch: Arc<AtomicUsize>,
    target: Target,
}

/// What a flush needs.
#[derive(Clone)]
struct Target {
    store: Store,
    /// Whether hints can go out now: jobs are then marked dispatched as they are made.
    hints: bool,
    dispatch: Dispatch,
    retry_for: Duration,
    hints_in_flight: HintsInFlight,
}

impl Target {
    /// Sends hints for committed jobs from a task of their own: callers are answered at
    /// the commit. A hint lost with a process that exits first only delays its job until
    /// a worker's database poll; [`crate::Producer::flush_hints`] waits for them.
    fn send_hints_in_background(&self, hints: Vec<HintTarget>) {
        if hints.is_empty() {
            return;
        }
        let on_its_way = self.hints_in_flight.start();
        let dispatch = self.dispatch.clone();
        tokio::spawn(async move {
            dispatch.send(&hints).await;
            drop(on_its_way);
        });
    }
}

/// Hints sent after their callers were answered and not yet in Redis. One count per
/// producer, shared by its clones and by the producers made from it
/// (`with_retry_for`, `with_isolation`), which start group commits of their own.
#[derive(Clone, Default)]
pub(crate) struct HintsInFlight(Arc<HintsCount>);

#[derive(Default)]
struct HintsCount {
    sends: AtomicUsize,
    none_left: Notify,
}

/// One background send; counted until dropped.
struct HintsOnTheirWay(HintsInFlight);

impl HintsInFlight {
    fn start(&self) -> HintsOnTheirWay {
        self.0.sends.fetch_add(1, Ordering::SeqCst);
        HintsOnTheirWay(self.clone())
    }

    /// Returns once no send counted when it was called, or started since, is left.
    pub(crate) async fn wait(&self) {
        loop {
            let none_left = self.0.none_left.notified();
            tokio::pin!(none_left);
            // Registered before the count is read, so a send ending in between wakes it.
            none_left.as_mut().enable();
            if self.0.sends.load(Ordering::SeqCst) == 0 {
                return;
            }
            none_left.await;
        }
    }
}

impl Drop for HintsOnTheirWay {
    fn drop(&mut self) {
        if self.0.0.sends.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.none_left.notify_waiters();
        }
    }
}

impl GroupCommit {
    /// Starts the flushing task on the current Tokio runtime.
    pub(crate) fn start(
        store: Store,
        hints: bool,
        dispatch: Dispatch,
        retry_for: Duration,
        hints_in_flight: HintsInFlight,
    ) -> GroupCommit {
        let (requests, receiver) = mpsc::unbounded_channel();
        let target = Target {
            store,
            hints,
            dispatch,
            retry_for,
            hints_in_flight,
        };
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let waiting = Arc::new(AtomicUsize::new(0));
        let last_batch = Arc::new(AtomicUsize::new(0));
        tokio::spawn(gather(
            target.clone(),
            receiver,
            slots.clone(),
            waiting.clone(),
            last_batch.clone(),
        ));
        GroupCommit {
            requests,
            slots,
            waiting,
            last_batch,
            target,
        }
    }

    /// Enqueues one validated job with whatever other calls are waiting.
    pub(crate) async fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError> {
        if let Some(slot) = self.idle_slot() {
            return self.enqueue_alone(job, slot).await;
        }
        let (reply, answer) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.requests
            .send(Request { job, reply })
            .map_err(|_| StoreError::Invalid("the producer's enqueue task stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Invalid("the producer's enqueue task stopped".into()))?
    }

    /// A slot, when no flush is in flight, no call waits and the last statement was a
    /// lone call's: then this call goes out alone at once (two calls that race here
    /// both go out alone, which is harmless).
    fn idle_slot(&self) -> Option<OwnedSemaphorePermit> {
        if self.waiting.load(Ordering::SeqCst) > 0
            || self.last_batch.load(Ordering::Relaxed) > 1
            || self.slots.available_permits() < MAX_IN_FLIGHT
        {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// One job in its own statement, from the caller's task.
    async fn enqueue_alone(
        &self,
        job: NewJob,
        slot: OwnedSemaphorePermit,
    ) -> Result<Enqueued, StoreError> {
        let jobs = [job];
        let ids = self.target.store.job_ids(&jobs);
        let answer = self
            .target
            .store
            .enqueue_with_ids(&jobs, &ids, self.target.hints, self.target.retry_for, false)
            .await;
        drop(slot);
        let mut enqueued = answer?;
        let enqueued = enqueued
            .pop()
            .ok_or_else(|| StoreError::Invalid("the insert returned no job".into()))?;
        self.target
            .send_hints_in_background(enqueued.hint.clone().into_iter().collect());
        Ok(enqueued)
    }
}

async fn gather(
    target: Target,
    mut requests: mpsc::UnboundedReceiver<Request>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    last_batch: Arc<AtomicUsize>,
) {
    while let Some(first) = requests.recv().await {
        // Wait for a slot before gathering, so the batch takes in every call that
        // arrived meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Turns for the callers just answered (woken, not yet run) to send their next
        // job, as long as each turn brings more: without them the first would go out
        // nearly alone. No timer: this path is taken only while another flush was in
        // flight. Measured with 32 producers: ~31 jobs per commit (one turn: ~27).
        let mut batch = vec![first];
        for _ in 0..GATHER_TURNS {
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < MAX_JOBS {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if batch.len() == before || batch.len() == MAX_JOBS {
                break;
            }
        }
        waiting.fetch_sub(batch.len(), Ordering::SeqCst);
        last_batch.store(batch.len(), Ordering::Relaxed);
        let target = target.clone();
        tokio::spawn(async move {
            flush(&target, batch).await;
            // Held until every caller of the batch is answered (their hints go out in
            // the background): the next batch gathers meanwhile.
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
    let ids = target.store.job_ids(&jobs);
    let deadline = Instant::now() + target.retry_for;
    insert(target, &jobs, &ids, replies, false, deadline).await;
}

/// Inserts `jobs` in one statement, starts their hints and answers each caller. When the
/// database refuses the statement, each half is tried on its own, down to the one job
/// that causes the refusal, so that only its caller gets the error (a few more
/// statements, not one per job).
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
                target.send_hints_in_background(
                    enqueued.iter().filter_map(|job| job.hint.clone()).collect(),
                );
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
