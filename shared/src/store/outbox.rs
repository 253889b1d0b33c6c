//! The outbox of job events: transitions (`job_events` rows with a `to_state`) that are
//! not on the event stream yet (`published_at` NULL, the partial index
//! `job_events_unpublished`), claimed in batches by the event relay inside its own
//! transaction, which commits the marks once the batch is on the stream. Nothing here touches the
//! transition statements: they append their rows as they always did, and a new row
//! starts unpublished.
//!
//! # Claims: a read, then a conditional update that waits
//!
//! A claim reads the oldest unpublished rows (no lock), then marks them in the relay's
//! transaction with one conditional statement, `UPDATE ... SET published_at = now()
//! WHERE <key> AND published_at IS NULL RETURNING <key>`; the relay sends what the
//! update returned, then commits. (On PostgreSQL the read and the update are one
//! statement that marks each row at its address, [`CLAIM_BY_ADDRESS`], with the same
//! behaviour as below.) The update is the row lock: nothing is written twice
//! per row. At read committed a second relay's update that meets rows the first has
//! marked but not committed waits for it; when the first commits, PostgreSQL re-checks
//! each waited-for row on its newest version, finds `published_at` set and skips it
//! (CockroachDB's read committed re-runs the statement at a newer snapshot after the
//! wait, with the same outcome); if the first rolled back, the second marks them. So
//! no row is claimed by two relays that both commit, and a relay whose rows overlap
//! another's sends only after that one committed. A subject's events therefore reach
//! the stream in the order they were written: a later change of a job commits after
//! the earlier one (its conditional update waited for the earlier's row lock), so a
//! claim that reads the later row reads the earlier, older one too, and either sends
//! both in `at` order or waits for the relay that holds the earlier one. (`SKIP LOCKED`
//! would let a second relay send a subject's later change while the first still held
//! the earlier.) A first locking read (`FOR UPDATE`) would give the same guarantees
//! but write a lock on every row before the update writes it again.
//!
//! A relay that dies before its commit leaves the rows unmarked: the next claim takes
//! them again and the stream gets them twice, with the same event ids (at least once).
//!
//! # Scans from the oldest end
//!
//! A marked row leaves the partial index. PostgreSQL's index scans skip such dead
//! entries cheaply (and vacuum removes them), so the claim always starts at the oldest
//! end there, which keeps the order exact. On CockroachDB every row that left the index
//! stays behind as a deleted-row marker until garbage collection, and a scan from the
//! oldest end would walk all of them: there the claim starts at a [`ScanBound`], with an
//! unbounded scan every [`ScanBound::new`]'s `full_every` claims for rows whose
//! transaction committed more than the bound's margin after their `at`.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{Isolation, Replay, Result, ScanBound, Store};
use crate::dialect::Dialect;
use crate::state::JobState;

impl Store {
    /// Whether any job transition waits for the relay: one read of the partial index,
    /// outside a transaction (read committed: a row committed just after it is found by
    /// the next look).
    ///
    /// The oldest waiting row, not `SELECT EXISTS (...)`: with statistics taken while
    /// many rows waited, PostgreSQL planned the `EXISTS` as a sequential scan of the
    /// whole history (14 ms a look in a 100,000-job drain, growing with the history),
    /// and drops an `ORDER BY` put inside it; `ORDER BY at LIMIT 1` keeps to the index.
    pub async fn job_events_pending(&self) -> Result<bool> {
        const SQL: &str = "SELECT at FROM job_events
                           WHERE published_at IS NULL AND to_state IS NOT NULL
                           ORDER BY at LIMIT 1";
        let rows = self
            .statement(Isolation::ReadCommitted, Replay::Safe, SQL, &[])
            .await?;
        Ok(!rows.is_empty())
    }
}

/// Whether this relay transaction has `source`'s turn: on PostgreSQL a
/// transaction-level advisory lock keyed by the source's name
/// (`pg_try_advisory_xact_lock`, released when `tx` ends); a relay without the turn
/// skips its round. Without turns every worker's relay read the same oldest rows and
/// all but one then waited on their row locks: in a two-worker drain 353,000 rows
/// were read to mark 300,000, and a read of 1,000 took 60 ms rather than 17. The
/// turn is an optimisation only: the claim's conditional update still keeps two
/// relays from sending the same row. CockroachDB has no advisory locks: there every
/// relay has its turn, and the claims take turns on their row locks as before.
pub async fn relay_turn(store: &Store, tx: &Transaction<'_>, source: &str) -> Result<bool> {
    match store.dialect().await? {
        Dialect::CockroachDb => Ok(true),
        Dialect::PostgreSql => {
            let key = relay_turn_key(source);
            let statement = tx
                .prepare_cached("SELECT pg_try_advisory_xact_lock($1)")
                .await?;
            Ok(tx.query_one(&statement, &[&key]).await?.get(0))
        }
    }
}

/// The advisory lock key of `source`'s turn: FNV-1a (64 bits) of `lc.events.<source>`,
/// a fixed function of the name, so that every worker of every version agrees on it.
fn relay_turn_key(source: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "lc.events.".bytes().chain(source.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// An unpublished transition, with what the event says about its job. `kind`,
/// `queue` and `group_id` are `None` only when the job row is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEventRow {
    pub job_id: Uuid,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub from_state: Option<JobState>,
    pub to_state: JobState,
    pub attempt: i64,
    pub message: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub group_id: Option<Uuid>,
}

/// The read of a claim around a `WHERE` clause on `e` (the history row).
macro_rules! pick_sql {
    ($where:literal) => {
        concat!(
            "SELECT e.job_id, e.id, e.at, e.from_state, e.to_state, e.attempt, e.message,
                    j.kind, j.queue, j.group_id
             FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id
             WHERE e.published_at IS NULL AND e.to_state IS NOT NULL",
            $where,
            "
             ORDER BY e.at
             LIMIT $1"
        )
    };
}

const PICK_FROM_OLDEST: &str = pick_sql!("");
const PICK_FROM_BOUND: &str = pick_sql!(" AND e.at >= $2");

/// The claim on PostgreSQL, in one statement: the read takes the oldest unpublished
/// rows' addresses (`ctid`), and the update marks each at its address (a TID scan
/// rather than a walk down the history's primary key), with the same condition as
/// [`mark_job_events`]. A row that another relay changed after the statement's
/// snapshot is followed to its newest version and the condition re-checked there, so
/// a row marked meanwhile is skipped and one whose marks are not committed yet is
/// waited for, exactly as in the two-statement claim. Within one statement an
/// address cannot name another row: vacuum keeps every row version the statement's
/// snapshot can see. The rows come back in the read's order (`at`, then address, the
/// order of the partial index). CockroachDB has no row addresses.
///
/// Measured with `pg_stat_statements` over one-worker drains, the two statements took
/// 7.3 µs (the read) and 11.4 µs (the mark) of statement time per change.
const CLAIM_BY_ADDRESS: &str = "
WITH picked AS MATERIALIZED (
    SELECT ctid AS address, at FROM job_events
    WHERE published_at IS NULL AND to_state IS NOT NULL
    ORDER BY at
    LIMIT $1
), marked AS (
    UPDATE job_events e SET published_at = now()
    FROM picked
    WHERE e.ctid = picked.address AND e.published_at IS NULL
    RETURNING e.job_id, e.id, e.at, e.from_state, e.to_state, e.attempt, e.message,
              picked.at AS picked_at, picked.address
)
SELECT m.job_id, m.id, m.at, m.from_state, m.to_state, m.attempt, m.message,
       j.kind, j.queue, j.group_id
FROM marked m LEFT JOIN jobs j ON j.id = m.job_id
ORDER BY m.picked_at, m.address";

/// Claims up to `limit` unpublished job transitions, oldest first, in the caller's
/// transaction (at read committed, or serializable: see the module's notes): reads
/// them, marks them published and returns those it marked, in `at` order. The marks
/// count only if the transaction commits. `bound` is `None` on PostgreSQL (one
/// statement, `CLAIM_BY_ADDRESS`, from the oldest end); on CockroachDB a read from
/// the bound, then the marks (`mark_job_events`).
pub async fn claim_job_events(
    tx: &Transaction<'_>,
    limit: i64,
    bound: Option<&mut ScanBound>,
) -> Result<Vec<JobEventRow>> {
    let rows = match bound {
        None => {
            let statement = tx.prepare_cached(CLAIM_BY_ADDRESS).await?;
            let rows = tx.query(&statement, &[&limit]).await?;
            return rows.iter().map(job_event_row).collect();
        }
        Some(bound) => {
            let from = bound.next();
            let now: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
            let rows = match from {
                None => {
                    let statement = tx.prepare_cached(PICK_FROM_OLDEST).await?;
                    tx.query(&statement, &[&limit]).await?
                }
                Some(from) => {
                    let statement = tx.prepare_cached(PICK_FROM_BOUND).await?;
                    tx.query(&statement, &[&limit, &from]).await?
                }
            };
            bound.done(now, rows.len(), limit);
            rows
        }
    };
    let picked: Vec<JobEventRow> = rows.iter().map(job_event_row).collect::<Result<_>>()?;
    let keys: Vec<(Uuid, Uuid)> = picked.iter().map(|row| (row.job_id, row.id)).collect();
    let marked = mark_job_events(tx, &keys).await?;
    Ok(picked
        .into_iter()
        .filter(|row| marked.contains(&(row.job_id, row.id)))
        .collect())
}

/// A claimed row: the history row's columns, then the job's `kind`, `queue` and
/// `group_id`.
fn job_event_row(row: &tokio_postgres::Row) -> Result<JobEventRow> {
    Ok(JobEventRow {
        job_id: row.try_get(0)?,
        id: row.try_get(1)?,
        at: row.try_get(2)?,
        from_state: row.try_get(3)?,
        to_state: row.try_get(4)?,
        attempt: row.try_get(5)?,
        message: row.try_get(6)?,
        kind: row.try_get(7)?,
        queue: row.try_get(8)?,
        group_id: row.try_get(9)?,
    })
}

/// Marks job transitions published where they are not yet, in the claim's transaction:
/// one statement for the batch, which waits for another relay's uncommitted marks of
/// the same rows (see the module's notes). Returns the keys it marked. Keys are
/// `(job_id, id)`, the history's primary key; the arrays go in through a scalar
/// subquery for one generic plan, a nested loop over the primary key (see the plans
/// note in [`super::complete`]).
async fn mark_job_events(
    tx: &Transaction<'_>,
    keys: &[(Uuid, Uuid)],
) -> Result<std::collections::HashSet<(Uuid, Uuid)>> {
    const SQL: &str = "
UPDATE job_events SET published_at = now()
FROM UNNEST((SELECT $1::UUID[]), $2::UUID[]) AS p(job_id, id)
WHERE job_events.job_id = p.job_id AND job_events.id = p.id
  AND job_events.published_at IS NULL
RETURNING job_events.job_id, job_events.id";
    if keys.is_empty() {
        return Ok(Default::default());
    }
    let job_ids: Vec<Uuid> = keys.iter().map(|(job_id, _)| *job_id).collect();
    let ids: Vec<Uuid> = keys.iter().map(|(_, id)| *id).collect();
    let statement = tx.prepare_cached(SQL).await?;
    Ok(tx
        .query(&statement, &[&job_ids, &ids])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
