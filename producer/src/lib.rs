//! The producer side of LaunchControl: a library that upstream Rust services link to
//! enqueue jobs, and the `lc` command built on it.
//!
//! ```no_run
//! # async fn example() -> Result<(), lc_producer::ProducerError> {
//! use lc_producer::Producer;
//! use lc_shared::{JobKind, NewJob, Priority};
//!
//! let producer = Producer::connect("postgres://lc@127.0.0.1:55432/launchcontrol",
//!                                  "redis://127.0.0.1:56379", "lc").await?;
//! let job = NewJob::new(JobKind::Sleep, serde_json::json!({"ms": 100}))
//!     .with_priority(Priority::High)
//!     .with_idempotency_key("order-42");
//! let enqueued = producer.enqueue(job).await?;
//! println!("job {}", enqueued.id);
//! # Ok(()) }
//! ```

pub mod cli;
pub mod group;

use lc_shared::NewJob;
use lc_shared::config::redact_url;
use lc_shared::job::InvalidJob;
use lc_shared::queue::{Queue, QueueError};
use lc_shared::store::{
    self, CancelOutcome, Enqueued, HintTarget, IsolationSetting, Store, StoreError, error_chain,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::warn;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

pub type Result<T = ()> = std::result::Result<T, ProducerError>;

/// Enqueues jobs: the database row first (durable), then a hint to Redis (fast).
/// Concurrent [`Producer::enqueue`] calls on one producer (and its clones) share
/// commits: see [`group`].
#[derive(Clone)]
pub struct Producer {
    store: Store,
    /// `None` when Redis was unreachable at connect time: jobs are still accepted and
    /// the workers' sweeper dispatches them.
    queue: Option<Queue>,
    /// How long an enqueue keeps retrying a database that is down or restarting.
    retry_for: Duration,
    /// Started at the first single enqueue (it needs a Tokio runtime), shared by clones.
    group: Arc<OnceLock<group::GroupCommit>>,
}

/// How long an enqueue waits out a database outage unless told otherwise: longer than
/// a restart or a failover takes.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

impl Producer {
    /// Connects to the database (lazily) and to Redis. Redis being down is not an
    /// error: enqueue keeps working and dispatch catches up later.
    pub async fn connect(
        database_url: &str,
        redis_url: &str,
        redis_prefix: &str,
    ) -> Result<Producer> {
        let store = Store::connect(database_url, 8)?;
        let queue = match Queue::connect(redis_url, redis_prefix).await {
            Ok(queue) => Some(queue),
            Err(err) => {
                warn!(redis = %redact_url(redis_url), error = %error_chain(&err),
                      "redis unavailable; jobs are stored and dispatched when it is back");
                None
            }
        };
        Ok(Producer::from_parts(store, queue))
    }

    pub fn from_parts(store: Store, queue: Option<Queue>) -> Producer {
        Producer {
            store,
            queue,
            retry_for: DEFAULT_RETRY_FOR,
            group: Arc::default(),
        }
    }

    /// Sets `--isolation` (see [`IsolationSetting`]).
    pub fn with_isolation(mut self, isolation: IsolationSetting) -> Producer {
        self.store = self.store.clone().with_isolation(isolation);
        self.group = Arc::default();
        self
    }

    /// Sets how long an enqueue keeps retrying when the database is unreachable,
    /// restarting ("the database system is starting up") or answers 40003; zero keeps
    /// only the store's few quick retries. Retrying never makes a second job: job ids
    /// are chosen before the first try, and a replay finds the job the first made.
    pub fn with_retry_for(mut self, retry_for: Duration) -> Producer {
        self.retry_for = retry_for;
        self.group = Arc::default();
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// Enqueues one job. With an idempotency key that already names a job, that job
    /// is returned (`created: false`) and nothing new is made. Calls made at the same
    /// time share one statement and one commit (group commit, see [`group`]); each gets
    /// its own answer and its own error, and a call made alone goes out at once.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        job.validate()?;
        let group = self.group.get_or_init(|| {
            group::GroupCommit::start(self.store.clone(), self.queue.clone(), self.retry_for)
        });
        Ok(group.enqueue(job).await?)
    }

    /// Enqueues many jobs in one statement and one commit; every job is validated
    /// first and nothing is written if any is invalid.
    pub async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        for job in jobs {
            job.validate()?;
        }
        let enqueued = self
            .store
            .enqueue_within(jobs, self.queue.is_some(), self.retry_for)
            .await?;
        let hints: Vec<HintTarget> = enqueued.iter().filter_map(|job| job.hint.clone()).collect();
        send_hints(&self.store, self.queue.as_ref(), &hints).await;
        Ok(enqueued)
    }

    /// Enqueues inside the caller's transaction: the jobs exist if and only if the
    /// caller commits. Call [`Producer::notify`] with the result after committing to
    /// dispatch at once; otherwise the sweeper dispatches within a sweep interval.
    ///
    /// ```no_run
    /// # async fn example(producer: &lc_producer::Producer) -> Result<(), Box<dyn std::error::Error>> {
    /// use lc_shared::{JobKind, NewJob};
    /// let mut client = producer.store().client().await?;
    /// let tx = client.transaction().await?;
    /// tx.execute("UPDATE jobs SET last_error = NULL WHERE false", &[]).await?; // your own writes
    /// let jobs = [NewJob::new(JobKind::Noop, serde_json::json!({}))];
    /// let enqueued = lc_producer::Producer::enqueue_in_transaction(&tx, &jobs).await?;
    /// tx.commit().await?;
    /// producer.notify(&enqueued).await;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in_transaction(
        transaction: &deadpool_postgres::Transaction<'_>,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>> {
        for job in jobs {
            job.validate()?;
        }
        Ok(store::enqueue_in_transaction(transaction, jobs).await?)
    }

    /// Sends hints for jobs enqueued in a committed transaction. Best effort: a job
    /// whose hint is lost still runs (the sweeper dispatches it).
    pub async fn notify(&self, enqueued: &[Enqueued]) {
        let Some(queue) = &self.queue else { return };
        let ids: Vec<Uuid> = enqueued
            .iter()
            .filter(|job| job.created)
            .map(|job| job.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        match self.store.take_by_ids(&ids).await {
            Ok(targets) => {
                if let Err(err) = queue.push_hints(&targets).await {
                    warn!(error = %error_chain(&err), "could not send hints; the sweeper dispatches these jobs");
                    let ids: Vec<Uuid> = targets.iter().map(|target| target.id).collect();
                    let _ = self.store.mark_undispatched(&ids).await;
                }
            }
            Err(err) => {
                warn!(error = %error_chain(&err), "could not mark jobs dispatched; the sweeper dispatches them")
            }
        }
    }

    /// Cancels a queued or running job (a running one stops at its worker's next
    /// heartbeat, its child processes killed).
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome> {
        Ok(self.store.cancel(id, "cancelled on request").await?)
    }
}

/// Sends the hints of jobs just enqueued; when Redis fails, marks them for the sweeper.
pub(crate) async fn send_hints(store: &Store, queue: Option<&Queue>, hints: &[HintTarget]) {
    let Some(queue) = queue else { return };
    if hints.is_empty() {
        return;
    }
    if let Err(err) = queue.push_hints(hints).await {
        warn!(error = %error_chain(&err), jobs = hints.len(),
              "redis unavailable; jobs are stored and the sweeper dispatches them");
        let ids: Vec<Uuid> = hints.iter().map(|hint| hint.id).collect();
        if let Err(err) = store.mark_undispatched(&ids).await {
            // Still safe: idle workers claim due jobs straight from the database.
            warn!(error = %error_chain(&err), "could not mark jobs for the sweeper");
        }
    }
}
