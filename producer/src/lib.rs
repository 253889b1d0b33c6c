//! The producer side of LaunchControl's queue core: a library that upstream Rust
//! services link to enqueue jobs ([`Producer`]), and the one read API over jobs, queues,
//! workers and the event stream ([`Inspector`], [`events`]) that the `lc` command (and
//! every other reader) uses.
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
//! producer.flush_hints().await; // before exiting: the hint follows the answer
//! # Ok(()) }
//! ```

pub mod events;
pub mod group;
pub mod inspect;
pub mod tokens;

pub use events::{EventReader, EventsFrom, StreamEvent};
pub use inspect::{ErrorKind, InspectError, Inspector};
pub use tokens::{Caller, Tokens};

use lc_shared::NewJob;
use lc_shared::config::redact_url;
use lc_shared::dispatch::{Dispatch, HintsObserver};
use lc_shared::job::InvalidJob;
use lc_shared::kind::Kinds;
use lc_shared::queue::{Hints, QueueError};
use lc_shared::store::{
    self, CancelOutcome, Enqueued, HintTarget, IsolationSetting, Store, StoreError, error_chain,
};
use lc_shared::telemetry::job_trace;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::{Instrument, warn};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error(transparent)]
    Kind(#[from] lc_shared::kind::KindError),
    #[error(transparent)]
    Concurrency(#[from] lc_shared::concurrency::InvalidConcurrency),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("redis was not reachable when this producer connected")]
    NoRedis,
    #[error("invalid event id {0:?}: expected <milliseconds>-<sequence>")]
    InvalidEventId(String),
}

impl ProducerError {
    /// Which kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProducerError::Invalid(_)
            | ProducerError::Kind(_)
            | ProducerError::Concurrency(_)
            | ProducerError::InvalidEventId(_) => ErrorKind::Invalid,
            ProducerError::Store(err) => ErrorKind::of_store(err),
            ProducerError::Queue(_) | ProducerError::NoRedis => ErrorKind::Unavailable,
        }
    }
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
    queue: Option<Hints>,
    /// How long an enqueue keeps retrying a database that is down or restarting.
    retry_for: Duration,
    /// The kinds this producer accepts (the core's unless told otherwise).
    kinds: Kinds,
    /// Sends hints after commits.
    dispatch: Dispatch,
    /// Started at the first single enqueue (it needs a Tokio runtime), shared by clones.
    group: Arc<OnceLock<group::GroupCommit>>,
    /// Hints of single enqueues still on their way to Redis; see [`Producer::flush_hints`].
    hints_in_flight: group::HintsInFlight,
    /// See [`Producer::on_hints_sent`].
    on_hints_sent: Option<HintsObserver>,
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
        let queue = match Hints::connect(redis_url, redis_prefix).await {
            Ok(queue) => Some(queue),
            Err(err) => {
                warn!(redis = %redact_url(redis_url), error = %error_chain(&err),
                      "redis unavailable; jobs are stored and dispatched when it is back");
                None
            }
        };
        Producer::from_parts(store, queue)
    }

    /// A producer on a store and (when Redis answered) its hints, accepting the core's
    /// kinds until [`Producer::with_kinds`] says otherwise.
    pub fn from_parts(store: Store, queue: Option<Hints>) -> Result<Producer> {
        Ok(Producer {
            dispatch: Dispatch::new(store.clone(), queue.clone()),
            store,
            queue,
            retry_for: DEFAULT_RETRY_FOR,
            kinds: lc_shared::builtin::kinds()?,
            group: Arc::default(),
            hints_in_flight: group::HintsInFlight::default(),
            on_hints_sent: None,
        })
    }

    /// Calls `observer` with each batch of hints right after Redis took it (the
    /// benchmark splits enqueue→handler into legs with it). It runs on the task that
    /// sends the hints: keep it short.
    pub fn on_hints_sent(mut self, observer: HintsObserver) -> Producer {
        self.on_hints_sent = Some(observer);
        self.dispatch = self.dispatch.on_sent(self.on_hints_sent);
        self.group = Arc::default();
        self
    }

    /// Sets `--isolation` (see [`IsolationSetting`]).
    pub fn with_isolation(mut self, isolation: IsolationSetting) -> Producer {
        self.store = self.store.clone().with_isolation(isolation);
        self.dispatch =
            Dispatch::new(self.store.clone(), self.queue.clone()).on_sent(self.on_hints_sent);
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

    /// Accepts these kinds instead of the core's, e.g.
    /// `lc_deployment::kinds::kinds()?.with::<MyKind>()?`.
    pub fn with_kinds(mut self, kinds: Kinds) -> Producer {
        self.kinds = kinds;
        self
    }

    /// The kinds this producer accepts.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn queue(&self) -> Option<&Hints> {
        self.queue.as_ref()
    }

    /// Creates or updates the database schema (safe to run from several places at once).
    pub async fn migrate(&self) -> Result<lc_shared::migrate::MigrationReport> {
        Ok(lc_shared::migrate::run(&self.store).await?)
    }

    /// The HTTP API's tokens and idempotency keys in this producer's database.
    pub fn tokens(&self) -> Tokens {
        Tokens::new(self.store.clone())
    }

    /// The read API over this producer's database and Redis, knowing this producer's
    /// kinds.
    pub fn inspector(&self) -> Inspector {
        Inspector::new(self.store.clone(), self.queue.clone(), self.kinds.clone())
    }

    /// Enqueues one job. With an idempotency key that already names a job, that job
    /// is returned (`created: false`) and nothing new is made. Calls made at the same
    /// time share one statement and one commit (group commit, see [`group`]); each gets
    /// its own answer and its own error, and a call made alone goes out at once. The
    /// answer comes at the commit and the job's hint goes to Redis just after: call
    /// [`Producer::flush_hints`] before the process exits.
    pub async fn enqueue(&self, mut job: NewJob) -> Result<Enqueued> {
        self.kinds.validate(&job)?;
        // The job carries its caller's trace into the shared statement, which another
        // caller's task may send.
        let span = job_trace::enqueue_span(std::slice::from_ref(&job));
        if job.traceparent.is_none() {
            job.traceparent = job_trace::traceparent_of(&span);
        }
        let group = self.group.get_or_init(|| {
            group::GroupCommit::start(
                self.store.clone(),
                self.queue.is_some(),
                self.dispatch.clone(),
                self.retry_for,
                self.hints_in_flight.clone(),
            )
        });
        Ok(group.enqueue(job).instrument(span).await?)
    }

    /// Waits until the hints of every [`Producer::enqueue`] answered so far are in
    /// Redis (or handed to the sweeper). An answer means the job is committed; its hint
    /// follows a moment later from a background task, so a process that exits right
    /// after enqueuing should call this first. Without it nothing is lost: a job whose
    /// hint went down with the process waits for a worker's database poll (within a
    /// second when a worker is idle, `--db-poll-interval` when all are busy) instead of
    /// starting at once. Batches
    /// ([`Producer::enqueue_batch`]) send their hints before they answer.
    pub async fn flush_hints(&self) {
        self.hints_in_flight.wait().await;
    }

    /// Enqueues many jobs in one statement and one commit; every job is validated
    /// first and nothing is written if any is invalid.
    pub async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
        for job in jobs {
            self.kinds.validate(job)?;
        }
        let enqueued = self
            .store
            .enqueue_within(jobs, self.queue.is_some(), self.retry_for)
            .await?;
        let hints: Vec<HintTarget> = enqueued.iter().filter_map(|job| job.hint.clone()).collect();
        self.dispatch.send(&hints).await;
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
    /// let enqueued = producer.enqueue_in_transaction(&tx, &jobs).await?;
    /// tx.commit().await?;
    /// producer.notify(&enqueued).await;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in_transaction(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>> {
        for job in jobs {
            self.kinds.validate(job)?;
        }
        Ok(store::enqueue_in_transaction(transaction, jobs).await?)
    }

    /// Sends hints for jobs enqueued in a committed transaction. Best effort: a job
    /// whose hint is lost still runs (the sweeper dispatches it).
    pub async fn notify(&self, enqueued: &[Enqueued]) {
        self.dispatch.committed(enqueued).await;
    }

    /// Cancels a queued or running job (a running one stops at its worker's next
    /// heartbeat, its child processes killed). A running job with a concurrency key
    /// frees its key's slot: the key's next waiting jobs get their hints here.
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome> {
        let outcome = self.store.cancel(id, "cancelled on request").await?;
        if outcome
            == (CancelOutcome::Cancelled {
                was: lc_shared::JobState::Running,
            })
            && let Some(key) = self
                .store
                .job(id)
                .await?
                .and_then(|job| job.concurrency_key)
        {
            let targets = self.store.waiting_heads(&[(key, 1)]).await?;
            self.dispatch.send(&targets).await;
        }
        Ok(outcome)
    }
}
