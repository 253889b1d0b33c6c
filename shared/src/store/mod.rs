//! The database, CockroachDB in production and PostgreSQL on one machine: the pool,
//! the one retry helper every transaction goes through, and the SQL. The `jobs` and
//! `job_events` tables have one submodule per stage of a job's life (every state
//! change there is one conditional statement that also appends its event rows, with
//! source and target states from [`crate::state::Transition`]); the other tables one
//! submodule each, and `outbox` reads the transitions the event relay has not
//! published yet.

/// The lease-expiry rule, written once: a running job's lease has expired when its
/// `lease_expires_at` is before the database's `now()` (never a worker's clock). A
/// literal, so that statements stay `&'static str` (`concat!`).
macro_rules! lease_expired {
    () => {
        "lease_expires_at < now()"
    };
}

mod claim;
mod complete;
mod concurrency;
mod enqueue;
mod groups;
mod operator;
mod outbox;
mod queues;
mod read;
mod rows;
mod sweep;
mod throughput;
mod tokens;
mod workers;

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};
use uuid::Uuid;

use crate::NewJob;
use crate::dialect::Dialect;

pub use concurrency::limit_unless_set;
pub use enqueue::{SINGLE_JOB_INSERT, enqueue_in_transaction};
pub use operator::cancel_queued_in_transaction;
pub use outbox::{JobEventRow, claim_job_events, relay_turn};
pub use rows::{
    CancelOutcome, Claim, ClaimedJob, Completion, ConcurrencyKeyRow, Enqueued, EventRow,
    ExpiredLease, HintTarget, JobFilter, JobRow, OperatorResult, QueueDepth, RunningJob, StuckJob,
    WaitingJob,
};
pub use throughput::FinishedCount;
pub use tokens::{KeyClaim, TokenLookup, TokenRow};
pub use workers::{WorkerInfo, WorkerRow};

/// Errors of the store. `Pool` and `Db` keep their sources.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database url")]
    Url(#[source] tokio_postgres::Error),
    #[error("could not build the connection pool: {0}")]
    Build(String),
    #[error("database connection unavailable")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error")]
    Db(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Invalid(String),
    /// A value read from the database that its type cannot hold (an unknown state, a
    /// priority number out of range): a defect in the data or a newer schema, never
    /// replaced by a default. `column` is `table.column`.
    #[error("unexpected value {value:?} in {column}")]
    Corrupt { column: &'static str, value: String },
}

pub type Result<T = ()> = std::result::Result<T, StoreError>;

impl StoreError {
    /// The SQLSTATE, when the database answered with one.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            StoreError::Db(err) => err.code(),
            _ => None,
        }
    }

    /// Whether the database could not be reached at all (down, restarting, connection
    /// cut) as opposed to answering with an error: callers wait for it to come back,
    /// saying so once per outage rather than once per try.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(err) => match err.code() {
                // No SQLSTATE: the connection failed or was closed under the statement.
                None => true,
                Some(code) => {
                    code.code().starts_with("08")
                        || *code == SqlState::ADMIN_SHUTDOWN
                        || *code == SqlState::CRASH_SHUTDOWN
                        || *code == SqlState::CANNOT_CONNECT_NOW
                        // A failover: this connection's server is a standby now.
                        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                }
            },
            StoreError::Url(_)
            | StoreError::Build(_)
            | StoreError::Invalid(_)
            | StoreError::Corrupt { .. } => false,
        }
    }

    /// Whether the transaction lost a conflict with another (SQLSTATE 40001, 40P01).
    pub fn is_conflict(&self) -> bool {
        self.code().is_some_and(|code| {
            *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        })
    }

    /// Whether the database refused the statement itself (bad data, a constraint, a
    /// statement it cannot run): then nothing of it committed, and running it again
    /// gives the same answer. Not [`StoreError::Corrupt`]: that is found in what a
    /// statement returned, after it may have committed.
    pub fn is_rejected(&self) -> bool {
        match self {
            StoreError::Invalid(_) => true,
            StoreError::Db(err) => err.code().is_some_and(|code| {
                let class = &code.code()[..2];
                matches!(class, "22" | "23" | "42" | "54")
            }),
            StoreError::Url(_)
            | StoreError::Build(_)
            | StoreError::Pool(_)
            | StoreError::Corrupt { .. } => false,
        }
    }

    /// Whether running the transaction again may succeed, given whether it is safe to
    /// replay after a commit whose outcome is unknown.
    fn is_retryable(&self, replay: Replay) -> bool {
        match self {
            // Nothing was sent: the pool could not hand out a connection.
            StoreError::Pool(_) => true,
            StoreError::Db(err) => match err.code() {
                Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => true,
                Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => true,
                // CockroachDB: "result is ambiguous" — the commit may have happened.
                Some(code) if code.code() == "40003" => replay == Replay::Safe,
                // The connection was cut (pg_terminate_backend, a restart): whether the
                // statement ran is unknown, exactly like 40003.
                Some(code) if *code == SqlState::ADMIN_SHUTDOWN => replay == Replay::Safe,
                Some(code) if *code == SqlState::CANNOT_CONNECT_NOW => true,
                // "cannot execute ... in a read-only transaction" (25006): the server this
                // connection reached was demoted to a standby (a failover, a switchover).
                // The statement was refused, so nothing of the transaction committed:
                // any transaction may run again, on a connection to the new primary (see
                // [`drop_connections_made_before_now`]).
                Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => true,
                Some(_) => false,
                None => replay == Replay::Safe,
            },
            StoreError::Url(_)
            | StoreError::Build(_)
            | StoreError::Invalid(_)
            | StoreError::Corrupt { .. } => false,
        }
    }
}

/// Whether a transaction can run twice without harm. Conditional updates fenced by
/// state and attempt can; a plain insert without an idempotency key cannot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    Safe,
    Unsafe,
}

/// The isolation level a transaction asks for. Chosen per call site, with the argument
/// for it beside the call; [`Store::level`] turns it into the level that runs (every
/// transaction at [`Isolation::Serializable`] under `--isolation serializable`).
///
/// - [`Isolation::ReadCommitted`]: one conditional statement (`UPDATE ... WHERE id = ..
///   AND state = .. AND attempt = ..`, its event insert in the same statement), or
///   statements whose reads lock what they read (`FOR UPDATE`). PostgreSQL re-checks an
///   `UPDATE`'s or a locking read's condition on the newest version of each row it
///   writes or locks, and CockroachDB's read committed keeps one statement free of
///   anomalies, so no interleaving can apply a transition to a row that left its
///   source state. No serialization failures, no predicate locks.
/// - [`Isolation::Serializable`]: reads that decide a later write without locking
///   what they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    Serializable,
}

impl Isolation {
    fn level(self) -> IsolationLevel {
        match self {
            Isolation::ReadCommitted => IsolationLevel::ReadCommitted,
            Isolation::Serializable => IsolationLevel::Serializable,
        }
    }

    fn begin(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL READ COMMITTED",
            Isolation::Serializable => "BEGIN ISOLATION LEVEL SERIALIZABLE",
        }
    }
}

/// The `--isolation` setting: what [`Isolation::ReadCommitted`] call sites run at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationSetting {
    /// Each transaction at the level its call site asks for: read committed for
    /// single conditional statements and locking reads, serializable otherwise
    #[default]
    ReadCommitted,
    /// Every transaction serializable, for databases without read committed (CockroachDB
    /// before v24.1, or with `sql.txn.read_committed_isolation.enabled` off)
    Serializable,
}

impl IsolationSetting {
    /// The setting as `--isolation` and `LC_ISOLATION` spell it.
    pub fn as_arg(self) -> &'static str {
        match self {
            IsolationSetting::ReadCommitted => "read-committed",
            IsolationSetting::Serializable => "serializable",
        }
    }
}

/// Runs a block in one transaction at `$isolation` (an [`Isolation`], raised to
/// serializable under `--isolation serializable`) through [`retry`] (so the block must
/// be safe to run again) and commits; the block sees the transaction as `$tx` and
/// returns a [`Result`]; a `return` leaves the block with that value (and commits what
/// was done).
///
/// ```ignore
/// in_transaction!(store, Isolation::Serializable, tx => {
///     tx.execute("UPDATE ...", &[]).await?;
///     Ok(())
/// })
/// ```
#[macro_export]
macro_rules! in_transaction {
    ($store:expr, $isolation:expr, $tx:ident => $body:block) => {
        $crate::store::retry($crate::store::Replay::Safe, || async {
            let mut client = $store.client().await?;
            let transaction = $store.begin(&mut client, $isolation).await?;
            let $tx = &transaction;
            let value: $crate::store::Result<_> = async { $body }.await;
            let value = value?;
            transaction.commit().await?;
            Ok(value)
        })
        .await
    };
}

impl Store {
    /// Runs one query (no transaction: a single statement) through [`retry`] and maps
    /// its rows: the read every "list" method shares.
    pub async fn query_rows<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        map: impl Fn(&tokio_postgres::Row) -> T,
    ) -> Result<Vec<T>> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client.query(sql, params).await?.iter().map(&map).collect())
        })
        .await
    }

    /// Runs one statement through [`retry`]; returns the rows it changed.
    pub async fn execute_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client.execute(sql, params).await?)
        })
        .await
    }

    /// [`Store::query_rows`] for at most one row.
    pub async fn query_row<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        map: impl Fn(&tokio_postgres::Row) -> T,
    ) -> Result<Option<T>> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client.query_opt(sql, params).await?.as_ref().map(&map))
        })
        .await
    }
}

/// Most connections of a store's unflushed pool: a worker claims from its fetcher and
/// extends leases from one loop, so a few connections serve them.
const UNFLUSHED_POOL_SIZE: usize = 4;

/// How long the retry helper keeps trying before it gives the error to its caller.
const RETRY_ATTEMPTS: u32 = 12;

/// The pool of a store. Its sessions start at the level single statements run at
/// (`-c default_transaction_isolation=...` in the startup packet, after any `options`
/// of the URL; PostgreSQL and CockroachDB both take it): read committed, or
/// serializable under `--isolation serializable`. A lone statement is then an implicit
/// transaction at the right level, and every transaction that needs another level
/// names it (`BEGIN ISOLATION LEVEL ...`, [`Store::begin`], `in_transaction!`).
/// Implicit transactions of callers holding a connection ([`Store::client`]) start at
/// that level too.
///
/// The pool's first connection learns which database answers (`SELECT version()`) and
/// records it in `dialect`, shared by every pool of one store.
///
/// With [`Flush::Skip`], the sessions also commit without waiting for the write-ahead
/// log to reach the disk (`-c synchronous_commit=off`): PostgreSQL only, see
/// [`Flush`].
fn build_pool(
    mut config: tokio_postgres::Config,
    pool_size: usize,
    isolation: IsolationSetting,
    flush: Flush,
    dialect: Arc<OnceLock<Dialect>>,
) -> Result<Pool> {
    let level = match isolation {
        IsolationSetting::ReadCommitted => r"read\ committed",
        IsolationSetting::Serializable => "serializable",
    };
    let mut ours = format!("-c default_transaction_isolation={level}");
    if flush == Flush::Skip {
        ours.push_str(" -c synchronous_commit=off");
    }
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // Fast recycling checks `is_closed`, which is enough to drop connections
            // that the server terminated.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let learn_dialect = deadpool_postgres::Hook::async_fn(move |client, _| {
        let dialect = dialect.clone();
        Box::pin(async move {
            if dialect.get().is_none() {
                let found = Dialect::detect(&**client)
                    .await
                    .map_err(deadpool_postgres::HookError::Backend)?;
                let _ = dialect.set(found);
            }
            Ok(())
        })
    });
    // Connections made before a server answered "read-only" (25006) may reach a demoted
    // primary: dropped when next taken from the pool, so that the new connection finds
    // the primary (`target_session_attrs=read-write` in a multi-host URL).
    let follow_the_primary = deadpool_postgres::Hook::sync_fn(|_, metrics| {
        if made_before_a_demotion(metrics.created) {
            Err(deadpool_postgres::HookError::Message(
                "connection made before its server was demoted".into(),
            ))
        } else {
            Ok(())
        }
    });
    Pool::builder(manager)
        // The connection used last is handed out first: at a low rate one session does
        // the work while the others idle, instead of every call waking the session
        // that has idled longest (deadpool's default), whose server process and its
        // caches are cold. Measured at 500 enqueues/s (latency section, two runs of
        // three repetitions each, the fresh database's first repetition left out): the
        // enqueue call's median 0.33–0.40 ms against 0.43–0.49 first-in-first-out, with
        // pgbench's paced commit of the same insert at 0.31–0.39 in the same runs.
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .post_create(learn_dialect)
        .pre_recycle(follow_the_primary)
        .max_size(pool_size.max(1))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Build(err.to_string()))
}

/// When this process last saw a server refuse a write because it is read-only (25006),
/// as nanoseconds after [`process_epoch`] (0: never). One mark for the whole process:
/// pools of other stores then drop their older connections too, which costs them a
/// reconnect and nothing else.
static DEMOTION_SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn process_epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

/// Marks every pooled connection made until now as stale: a server answered 25006, so
/// some connections reach a standby that used to be the primary.
fn drop_connections_made_before_now() {
    let nanos = u64::try_from(process_epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
    DEMOTION_SEEN.fetch_max(nanos.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Whether a connection made at `created` predates the last demotion this process saw.
fn made_before_a_demotion(created: std::time::Instant) -> bool {
    let seen = DEMOTION_SEEN.load(std::sync::atomic::Ordering::Relaxed);
    seen != 0 && created <= process_epoch() + Duration::from_nanos(seen)
}

/// Runs `op` until it succeeds, retrying serialization failures (SQLSTATE 40001 and
/// 40P01) with backoff, writes refused by a server that is read-only now (25006: a
/// failover demoted it; the pool's connections made before are then dropped), and
/// connection losses and CockroachDB's 40003 only where `replay` says the transaction
/// is safe to run again. Every transaction of the project goes through here.
pub async fn retry<T, F, Fut>(replay: Replay, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_within(replay, Duration::ZERO, op).await
}

/// [`retry`] that, beyond its usual tries, keeps retrying for up to `budget` in all:
/// for callers that would rather wait out a database restart (a few seconds) than
/// fail, like `lc enqueue`. Retries back off to at most a second.
pub async fn retry_within<T, F, Fut>(replay: Replay, budget: Duration, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err)
                if (attempt < RETRY_ATTEMPTS || started.elapsed() < budget)
                    && err.is_retryable(replay) =>
            {
                attempt += 1;
                if err.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                    drop_connections_made_before_now();
                }
                // Conflicts are short-lived: the first retry comes within a millisecond,
                // later ones back off to at most 20 ms, so no job waits seconds behind a
                // run of serialization failures. A database that is away (restarting,
                // cut off) is waited for up to a second between tries.
                let most = if err.is_conflict() {
                    Duration::from_millis(20)
                } else {
                    Duration::from_millis(1_000)
                };
                let backoff =
                    crate::state::retry_delay(i64::from(attempt), Duration::from_millis(1), most);
                tracing::debug!(error = %error_chain(&err), attempt, "retrying transaction");
                tokio::time::sleep(backoff).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The error with all its causes, for logs and CLI messages.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// When a statement waits for this process's turn (one lock per [`Store`] and its
/// clones, held for the statement and its commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Under `--isolation serializable` only, as every single-statement transition
    /// there (see [`Store::statement`]).
    WhenSerializable,
    /// At every level: the statements by which a worker changes many of the jobs it
    /// holds (completions, lease extensions, hand-backs at shutdown). Two of them
    /// running at once in one process would lock the same rows, each in the order of
    /// its own batch, and could deadlock (PostgreSQL breaks a deadlock only after
    /// `deadlock_timeout`, 1 s). Taking turns costs no locking read: each statement
    /// finds its rows by primary key and locks them by updating them. Between
    /// processes there is nothing to order: each statement changes only its own
    /// process's jobs (it is fenced by `lease_owner`). Only the sweeper changes
    /// another's rows, those whose lease expired, and a completion that meets one of
    /// those waits for it as before.
    Always,
}

/// Whether a commit waits for its write-ahead log record to reach the disk.
///
/// Every outcome, enqueue and operator action waits ([`Flush::Wait`]). A claim and a
/// lease extension need not ([`Flush::Skip`]), on PostgreSQL: PostgreSQL writes its
/// log in order, and a flush covers everything before it, so
/// - a lost claim (the server crashed before the log writer flushed it, within
///   `3 × wal_writer_delay`) takes nothing else with it but the unflushed commits
///   after it; every outcome, effect or event the claimed attempt recorded waited for
///   a flush that included the claim. An attempt that recorded nothing durable is,
///   after the crash, as if never started: the job is `queued` with its attempt count
///   from before, its old worker's writes are fenced out (state and claim no longer
///   match: a claim made again has the same attempt number, and the same lease owner
///   when the same worker makes it, but another claim time, see [`Claim`]) and it runs
///   again, as after any lost worker;
/// - a lost lease extension leaves an earlier expiry: the job is at worst taken back
///   by the sweeper and run again, fenced in the same way.
///
/// Neither can lose a job, record an outcome twice or make an illegal transition.
/// CockroachDB commits through its consensus either way: there every pool waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    Wait,
    Skip,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Sessions that commit without waiting for the disk: claims and lease extensions
    /// on PostgreSQL (see [`Flush`]). Opens connections only when first used.
    unflushed: Pool,
    /// What the pool was built from, for [`Store::with_isolation`].
    config: std::sync::Arc<(tokio_postgres::Config, usize)>,
    isolation: IsolationSetting,
    /// This process's turn: under `--isolation serializable` its single-statement
    /// transitions run one at a time (see [`Store::statement`]); at read committed
    /// the statements that change many of the jobs this process holds do (see
    /// [`Turn::Always`]).
    serial: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Which database answers, once the first connection has asked (see [`build_pool`]).
    dialect: Arc<OnceLock<Dialect>>,
}

/// How new job ids are made (see [`Store::job_ids`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdOrder {
    /// UUIDv7: the time first, so new rows go to the right-hand end of the primary key
    /// instead of a random page of it.
    TimeOrdered,
    /// UUIDv4.
    Random,
}

impl Store {
    /// Connects lazily: the pool opens connections when they are first needed.
    pub fn connect(database_url: &str, pool_size: usize) -> Result<Store> {
        let config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Url)?;
        let isolation = IsolationSetting::default();
        let dialect = Arc::new(OnceLock::new());
        Ok(Store {
            pool: build_pool(
                config.clone(),
                pool_size,
                isolation,
                Flush::Wait,
                dialect.clone(),
            )?,
            unflushed: build_pool(
                config.clone(),
                pool_size.min(UNFLUSHED_POOL_SIZE),
                isolation,
                Flush::Skip,
                dialect.clone(),
            )?,
            config: std::sync::Arc::new((config, pool_size)),
            isolation,
            serial: std::sync::Arc::default(),
            dialect,
        })
    }

    /// The same store under another `--isolation` setting (a new pool: its sessions
    /// start at the setting's level, see `build_pool`).
    pub fn with_isolation(mut self, isolation: IsolationSetting) -> Store {
        if isolation != self.isolation {
            let (config, pool_size) = &*self.config;
            // The only refusal of deadpool's builder is a timeout without a runtime,
            // and build_pool names the runtime.
            let build = |size, flush| {
                build_pool(config.clone(), size, isolation, flush, self.dialect.clone())
                    .expect("a pool with a runtime builds")
            };
            self.pool = build(*pool_size, Flush::Wait);
            self.unflushed = build((*pool_size).min(UNFLUSHED_POOL_SIZE), Flush::Skip);
            self.isolation = isolation;
        }
        self
    }

    pub fn isolation(&self) -> IsolationSetting {
        self.isolation
    }

    /// The level a transaction that asks for `wanted` runs at: the one place that
    /// decides, for `Store::statement`, [`Store::begin`] and `in_transaction!`.
    pub fn level(&self, wanted: Isolation) -> Isolation {
        match self.isolation {
            IsolationSetting::ReadCommitted => wanted,
            IsolationSetting::Serializable => Isolation::Serializable,
        }
    }

    /// Opens a transaction on `client` at [`Store::level`] of `wanted`.
    pub async fn begin<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
        wanted: Isolation,
    ) -> Result<deadpool_postgres::Transaction<'a>> {
        Ok(client
            .build_transaction()
            .isolation_level(self.level(wanted).level())
            .start()
            .await?)
    }

    /// Runs one statement as its own transaction at [`Store::level`] of `wanted`,
    /// through [`retry`], and returns its rows. At the sessions' own level (every
    /// single-statement transition) it is an implicit transaction: one message, one
    /// answer. At another level `BEGIN ISOLATION LEVEL ...`, the statement and `COMMIT`
    /// are sent together (tokio-postgres pipelines requests that are polled together):
    /// still one round trip, but three answers for the server to send (measured, the
    /// server's sends were half its CPU time on a one-producer enqueue). All three are
    /// queued on the connection at the first poll, so a caller that gives up on this
    /// future never leaves a transaction open on a pooled connection; when the
    /// statement fails, PostgreSQL answers the `COMMIT` with a rollback.
    ///
    /// Under `--isolation serializable`, one process runs these one at a time. Its
    /// claims, completions and heartbeats touch different jobs, but each reads the
    /// primary-key index pages of its batch and writes new entries into them (a state
    /// change is never a HOT update: `state` is in the partial indexes' predicates), and
    /// PostgreSQL's predicate locks on index pages are page-sized: two such statements
    /// running at once read each other's pages and form the read/write cycle that
    /// serializable aborts. Measured, that was every rollback of a one-worker drain
    /// (241 per 20,000 jobs). One at a time, a worker's batches simply grow while it
    /// waits; conflicts remain only between processes.
    pub(crate) async fn statement(
        &self,
        wanted: Isolation,
        replay: Replay,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.statement_flushed(wanted, replay, Flush::Wait, sql, params)
            .await
    }

    /// [`Store::statement`] whose commit waits for the disk or not, as `flush` says
    /// (always waits on CockroachDB, and before the database is known).
    pub(crate) async fn statement_flushed(
        &self,
        wanted: Isolation,
        replay: Replay,
        flush: Flush,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.statement_in_turn(Turn::WhenSerializable, wanted, replay, flush, sql, params)
            .await
    }

    /// [`Store::statement_flushed`] that takes this process's turn as `turn` says.
    pub(crate) async fn statement_in_turn(
        &self,
        turn: Turn,
        wanted: Isolation,
        replay: Replay,
        flush: Flush,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let pool = match (flush, self.dialect.get()) {
            (Flush::Skip, Some(Dialect::PostgreSql)) => &self.unflushed,
            _ => &self.pool,
        };
        let level = self.level(wanted);
        let implicit = self.is_session_level(level);
        let begin = level.begin();
        retry(replay, || async move {
            let _turn = match (level, turn) {
                (Isolation::Serializable, _) | (_, Turn::Always) => Some(self.serial.lock().await),
                (Isolation::ReadCommitted, Turn::WhenSerializable) => None,
            };
            let client = pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            if implicit {
                return Ok(client.query(&statement, params).await?);
            }
            let (begun, rows, committed) = tokio::join!(
                client.batch_execute(begin),
                client.query(&statement, params),
                client.batch_execute("COMMIT"),
            );
            begun?;
            let rows = rows?;
            committed?;
            Ok(rows)
        })
        .await
    }

    /// Whether a lone statement runs at `level` as an implicit transaction: the pool's
    /// sessions start at the level of single statements (see [`build_pool`]).
    pub(crate) fn is_session_level(&self, level: Isolation) -> bool {
        level == self.level(Isolation::ReadCommitted)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the pool, for callers that run their own transaction (the
    /// producer's transactional enqueue).
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// A connection of the pool that claims and lease extensions use: sessions that
    /// commit without waiting for the disk on PostgreSQL (see [`Flush`]), the main
    /// pool elsewhere and before the database is known.
    pub async fn claims_client(&self) -> Result<deadpool_postgres::Object> {
        let pool = match self.dialect.get() {
            Some(Dialect::PostgreSql) => &self.unflushed,
            _ => &self.pool,
        };
        Ok(pool.get().await?)
    }

    /// The database's clock, which every lease and due time is measured by.
    pub async fn database_now(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let statement = client.prepare_cached("SELECT now()").await?;
            Ok(client.query_one(&statement, &[]).await?.get(0))
        })
        .await
    }

    /// Which database answers: learned by the pool's first connection, asked for here
    /// when no connection was made yet.
    pub async fn dialect(&self) -> Result<Dialect> {
        if let Some(dialect) = self.dialect.get() {
            return Ok(*dialect);
        }
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let found = match self.dialect.get() {
                Some(dialect) => *dialect,
                None => Dialect::detect(&**client).await?,
            };
            Ok(*self.dialect.get_or_init(|| found))
        })
        .await
    }

    /// Whether the database is CockroachDB, for the settings that must differ there
    /// (leases, see the worker's configuration).
    pub async fn is_cockroachdb(&self) -> Result<bool> {
        Ok(self.dialect().await? == Dialect::CockroachDb)
    }

    /// How this store makes new job ids. Time-ordered on PostgreSQL at read committed:
    /// every insert then lands on the primary key's right-hand page, which stays in
    /// memory, instead of dirtying a random page of an index that outgrows the cache.
    /// Random elsewhere:
    /// - on CockroachDB, time-ordered keys send every insert to the one range that
    ///   holds the newest keys (a hot spot); random keys spread them;
    /// - under `--isolation serializable`, time-ordered ids put two workers' jobs on
    ///   the same primary-key pages, and predicate locks cover pages: measured, 25-27
    ///   rollbacks per 1,000 jobs with two workers against 4.5-8 with random ids;
    /// - before the first connection, while the database is not known yet.
    pub fn id_order(&self) -> IdOrder {
        match (self.dialect.get(), self.isolation) {
            (Some(Dialect::PostgreSql), IsolationSetting::ReadCommitted) => IdOrder::TimeOrdered,
            _ => IdOrder::Random,
        }
    }

    /// Ids for jobs about to be inserted: the producer's, or new ones in
    /// [`Store::id_order`]. Chosen once per enqueue, before any try, so that every try
    /// inserts the same ids.
    pub fn job_ids(&self, jobs: &[NewJob]) -> Vec<Uuid> {
        enqueue::job_ids(jobs, self.id_order())
    }

    /// Checks that the database answers; used at start-up for a clear first error.
    pub async fn ping(&self) -> Result {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// A lower bound for a scan that starts at the oldest end of a partial index
/// (`jobs_running_lease`, `jobs_undispatched`, `jobs_queued_due`). On CockroachDB,
/// rows that left such an index leave deleted-row markers behind at their old keys until
/// garbage collection (`gc.ttlseconds` of `jobs`), and an unbounded scan walks every one
/// of them. A scan that took everything it found (fewer rows than its limit) moves the
/// bound up to its own database time less [`ScanBound::MARGIN`]: rows enter these
/// indexes at `now()` or later (a new lease ends at least a second from now, a retry,
/// an expiry, a release or a revive is due from now), and the margin covers
/// CockroachDB's 500 ms maximum clock offset between nodes. The few ways in below the
/// bound (a hint that could not be sent, a job enqueued in a transaction with a `run_at`
/// in the past, a row skipped because another transaction held it) are caught by an
/// unbounded scan every `full_every` scans; meanwhile such jobs still run through
/// their hint or a worker's database poll.
#[derive(Clone, Copy, Debug)]
pub struct ScanBound {
    from: Option<chrono::DateTime<chrono::Utc>>,
    scans: u32,
    full_every: u32,
}

impl ScanBound {
    /// Room for clock offset between CockroachDB nodes (500 ms at most).
    pub const MARGIN: Duration = Duration::from_secs(1);

    /// Starts unbounded; every `full_every`th scan is unbounded too.
    pub fn new(full_every: u32) -> ScanBound {
        ScanBound {
            from: None,
            scans: 0,
            full_every: full_every.max(1),
        }
    }

    /// The lower bound for the next scan (`None`: scan from the oldest end).
    fn next(&mut self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.scans = self.scans.wrapping_add(1);
        if self.scans.is_multiple_of(self.full_every) {
            None
        } else {
            self.from
        }
    }

    /// After a scan at database time `now` that returned `found` of at most `limit`.
    fn done(&mut self, now: chrono::DateTime<chrono::Utc>, found: usize, limit: i64) {
        if (found as i64) < limit {
            let margin = chrono::Duration::from_std(Self::MARGIN).unwrap_or_default();
            self.from = Some(now - margin);
        }
    }
}

/// Milliseconds as the BIGINT that SQL multiplies with `INTERVAL '1 millisecond'`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
