//! The database, CockroachDB in production and PostgreSQL on one machine: the pool,
//! the one retry helper every transaction goes through, and the SQL of each table,
//! one submodule per table.

mod jobs;
mod ops;
mod queues;
mod workers;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

pub use jobs::{
    CancelOutcome, ClaimedJob, Completion, Enqueued, EventRow, HintTarget, JobFilter, JobRow,
    OperatorResult, QueueDepth, StuckJob, enqueue_in_transaction,
};
pub use ops::{RunningJob, WaitingJob};
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
                }
            },
            StoreError::Url(_) | StoreError::Build(_) | StoreError::Invalid(_) => false,
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
                Some(_) => false,
                None => replay == Replay::Safe,
            },
            StoreError::Url(_) | StoreError::Build(_) | StoreError::Invalid(_) => false,
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

/// Runs a block in one transaction through [`retry`] (so the block must be safe to run
/// again) and commits; the block sees the transaction as `$tx` and returns a
/// [`Result`]; a `return` leaves the block with that value (and commits what was done).
///
/// ```ignore
/// in_transaction!(store, tx => {
///     tx.execute("UPDATE ...", &[]).await?;
///     Ok(())
/// })
/// ```
#[macro_export]
macro_rules! in_transaction {
    ($store:expr, $tx:ident => $body:block) => {
        $crate::store::retry($crate::store::Replay::Safe, || async {
            let mut client = $store.client().await?;
            let transaction = client.transaction().await?;
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

/// How long the retry helper keeps trying before it gives the error to its caller.
const RETRY_ATTEMPTS: u32 = 12;

/// Runs `op` until it succeeds, retrying serialization failures (SQLSTATE 40001 and
/// 40P01) with backoff, and connection losses and CockroachDB's 40003 only where
/// `replay` says the transaction is safe to run again. Every transaction of the
/// project goes through here.
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
                // Conflicts are short-lived: the first retry comes within a millisecond,
                // later ones back off to at most a second (12 tries span about 2 s).
                let backoff = crate::state::retry_delay(
                    i64::from(attempt),
                    Duration::from_millis(1),
                    Duration::from_millis(1_000),
                );
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

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Connects lazily: the pool opens connections when they are first needed.
    pub fn connect(database_url: &str, pool_size: usize) -> Result<Store> {
        let config = tokio_postgres::Config::from_str(database_url).map_err(StoreError::Url)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Fast recycling checks `is_closed`, which is enough to drop connections
                // that the server terminated.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|err| StoreError::Build(err.to_string()))?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the pool, for callers that run their own transaction (the
    /// producer's transactional enqueue).
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Checks that the database answers; used at start-up for a clear first error.
    pub async fn ping(&self) -> Result {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Milliseconds as the BIGINT that SQL multiplies with `INTERVAL '1 millisecond'`.
pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
