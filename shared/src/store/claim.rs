//! Claims: a worker takes queued, due jobs, by the ids of hints or straight from a
//! queue, and holds them under a lease. The attempt number goes up by one and
//! `started_at` is set to the claim's time: together the fencing token of everything
//! the worker records afterwards (see [`super::Claim`]). Claims by id take their ids as
//! `UNNEST((SELECT $1::UUID[]), ...)`: see the plans note in [`super::complete`].
//!
//! # Jobs with a concurrency key
//!
//! The claims by id and by queue take only jobs without a key (`concurrency_key IS
//! NULL`): one conditional statement each, as before keys existed. A job with a key is
//! claimed by [`Store::claim_keyed`] only, which takes the key's next jobs of one queue
//! (highest priority, oldest first) up to the key's free slots, whichever of its jobs a
//! hint named: a hint of a keyed job means "this key may have work". A job whose key is
//! full is not claimed and its hint is dropped; it stays `queued` (no attempt used)
//! until a slot frees, and then whoever freed the slot sends a hint for the key's next
//! waiting jobs ([`Store::waiting_heads`]); a lost hint is made up by the workers'
//! database poll ([`Store::keys_with_room`]).
//!
//! Counting the running jobs and then claiming is a read that decides a write, so the
//! claim locks what it reads, at read committed (see [`Store::claim_keyed`]).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::complete::by_id;
use super::rows::{ClaimedJob, claimed_job};
use super::{Flush, Isolation, Replay, Result, ScanBound, Store, millis};
use crate::state::{JobState, Transition};

/// The claim statement around a `WHERE` clause (with, optionally, CTEs before the
/// claim's own): $1.. are bound by the callers in the order (ids or queue, from states,
/// to state, worker, lease ms, label[, limit, lower bound]). The claim's one source
/// state (`queued`) is the first of the from states.
macro_rules! const_format_claim {
    ($where:literal) => {
        const_format_claim!("", $where)
    };
    ($before:literal, $where:literal) => {
        concat!(
            "WITH ",
            $before,
            "claimed AS (
    UPDATE jobs SET state = $3, attempt = jobs.attempt + 1, lease_owner = $4,
        lease_expires_at = now() + $5::INT8 * INTERVAL '1 millisecond',
        started_at = now(), updated_at = now() ",
            $where,
            "
    RETURNING jobs.id, jobs.kind, jobs.queue, jobs.priority, jobs.payload, jobs.attempt,
              jobs.max_attempts, jobs.group_id, jobs.timeout_ms, jobs.traceparent,
              jobs.started_at
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, ($2::TEXT[])[1], $3, attempt, $4, $6 FROM claimed
)
SELECT id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms,
       traceparent, started_at FROM claimed"
        )
    };
}

impl Store {
    async fn claim(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<ClaimedJob>> {
        // See [`Flush`]: a claim lost in a crash is an attempt that never started.
        let rows = self
            .statement_flushed(
                Isolation::ReadCommitted,
                Replay::Safe,
                Flush::Skip,
                sql,
                params,
            )
            .await?;
        rows.iter().map(|row| claimed_job(row, None)).collect()
    }

    /// Claims the jobs named by hints, those still queued and due and without a
    /// concurrency key. A stale or duplicate hint simply claims nothing; a hint of a
    /// job with a key claims nothing here either ([`Store::claim_keyed`] takes those).
    pub async fn claim_by_ids(
        &self,
        ids: &[Uuid],
        worker: Uuid,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>> {
        // Each id with its expected state, as rows of the input: see [`by_id`].
        const SQL: &str = const_format_claim!(
            "WHERE (id, state) IN (SELECT id, state FROM UNNEST((SELECT $1::UUID[]), $7::TEXT[]) AS h(id, state))
               AND run_at <= now() AND concurrency_key IS NULL"
        );
        let transition = Transition::Claim;
        let from = transition.from_strs();
        let states = by_id(ids, from[0]);
        self.claim(
            SQL,
            &[
                &ids,
                &from,
                &transition.to().as_str(),
                &worker,
                &millis(lease),
                &transition.label(),
                &states,
            ],
        )
        .await
    }

    /// Claims up to `limit` due jobs without a concurrency key of one queue straight
    /// from the database, highest priority and oldest first: the path that needs no
    /// hint (lost hints, Redis down). Jobs with a key waiting in the same queue are
    /// read and skipped by the scan of `jobs_queued_due` (see [`Store::keys_with_room`]
    /// for theirs).
    ///
    /// One queue per statement: with `FOR UPDATE SKIP LOCKED` and `LIMIT`, CockroachDB
    /// locks every row its locking read returns before the sort and limit above it when
    /// several queues are merged; over one queue the index `jobs_queued_due (queue,
    /// priority, run_at)` yields the rows already in order, so the limit sits under the
    /// lock. `SKIP LOCKED` keeps concurrent pollers off each other's rows; the update
    /// re-checks `state`, so a row claimed meanwhile by a hint is not claimed twice.
    /// `run_at >= bound` keeps the scan off the deleted-row markers of jobs claimed
    /// before (see [`ScanBound`]). Read committed: one conditional statement.
    ///
    /// The pick is a CTE of its own, run once, and the update finds its rows by
    /// primary key, re-checking each one's state against the state the pick locked (a
    /// column, not the constant): as `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR
    /// UPDATE SKIP LOCKED) AND state = ANY($2)`, with statistics taken while no job
    /// was queued, PostgreSQL read every queued job through `jobs_queued_due` and ran
    /// the pick again for each (a nested-loop semi-join); each run skipped the rows
    /// the statement had claimed already and took the next, so one poll claimed the
    /// whole queue (100,000 jobs in 13.7 s, past the worker's free places). See
    /// [`Store::claim_keyed`], which met the same plan.
    pub async fn claim_due(
        &self,
        queue: &str,
        limit: i64,
        worker: Uuid,
        lease: std::time::Duration,
        bound: &mut ScanBound,
    ) -> Result<Vec<ClaimedJob>> {
        const SQL: &str = const_format_claim!(
            "picked AS MATERIALIZED (
    SELECT id, state FROM jobs
    WHERE state = ANY($2) AND queue = $1 AND run_at <= now()
      AND concurrency_key IS NULL
      AND ($8::TIMESTAMPTZ IS NULL OR run_at >= $8)
      AND NOT EXISTS (SELECT 1 FROM queue_settings WHERE queue_settings.queue = $1 AND paused)
    ORDER BY priority, run_at LIMIT $7 FOR UPDATE SKIP LOCKED
), ",
            "FROM picked WHERE jobs.id = picked.id AND jobs.state = picked.state"
        );
        let transition = Transition::Claim;
        let from = bound.next();
        let now = self.database_now().await?;
        let claimed = self
            .claim(
                SQL,
                &[
                    &queue,
                    &transition.from_strs(),
                    &transition.to().as_str(),
                    &worker,
                    &millis(lease),
                    &transition.label(),
                    &limit,
                    &from,
                ],
            )
            .await?;
        bound.done(now, claimed.len(), limit);
        Ok(claimed)
    }

    /// The concurrency keys of the named jobs in `queue` (whatever their state: a stale
    /// hint of a keyed job still says that its key may have work), sorted.
    pub async fn concurrency_keys_of(&self, ids: &[Uuid], queue: &str) -> Result<Vec<String>> {
        const SQL: &str = "
SELECT DISTINCT concurrency_key FROM jobs
WHERE id = ANY($1) AND queue = $2 AND concurrency_key IS NOT NULL
ORDER BY concurrency_key";
        self.query_rows(SQL, &[&ids, &queue], |row| row.get(0))
            .await
    }

    /// Keys with due jobs waiting in `queue` and a free slot (no limit, or fewer
    /// running than it), at most `limit` of them: what a worker's database poll claims
    /// from, so that keyed jobs whose hint was lost still start. One probe of
    /// `jobs_keyed_queued` and one count on `jobs_keyed_running` per key of the table.
    pub async fn keys_with_room(&self, queue: &str, limit: i64) -> Result<Vec<String>> {
        const SQL: &str = "
SELECT k.concurrency_key FROM concurrency_keys k
WHERE EXISTS (SELECT 1 FROM jobs j
              WHERE j.concurrency_key = k.concurrency_key AND j.concurrency_key IS NOT NULL
                AND j.state = $2 AND j.queue = $1 AND j.run_at <= now())
  AND (k.max_running IS NULL
       OR k.max_running > (SELECT count(*) FROM jobs r
                           WHERE r.concurrency_key = k.concurrency_key
                             AND r.concurrency_key IS NOT NULL AND r.state = $3))
ORDER BY k.concurrency_key LIMIT $4";
        let queued = JobState::Queued.as_str();
        let running = JobState::Running.as_str();
        self.query_rows(SQL, &[&queue, &queued, &running, &limit], |row| row.get(0))
            .await
    }

    /// Claims up to `limit` due jobs of one concurrency key in one queue, highest
    /// priority and oldest first, as far as the key's limit allows: none when the key
    /// is full. Nothing of it busy-waits: a full key answers at once.
    ///
    /// Why this never runs more than the limit, at read committed, on PostgreSQL and
    /// CockroachDB alike:
    /// 1. `SELECT ... FROM concurrency_keys ... FOR UPDATE` locks the key's row, so the
    ///    claims of one key run one after another, whichever worker makes them; the
    ///    lock is held until this transaction ends.
    /// 2. Only this function moves a keyed job to `running` (the other claims take
    ///    `concurrency_key IS NULL`), so every job of the key that became running
    ///    did so in a transaction that held the lock, and committed before we got it.
    /// 3. The count of the key's running jobs is a statement of its own, after the
    ///    lock: at read committed each statement reads what committed before it began
    ///    (PostgreSQL takes a new snapshot per statement; CockroachDB's read committed
    ///    too), so it sees every such claim. (The count must not share a statement with
    ///    the locking read: PostgreSQL re-reads only the locked row after waiting for a
    ///    lock, not a subquery's rows, so it would count what ran before the wait.)
    /// 4. Until we commit, the running jobs of the key can only become fewer
    ///    (completions, expiries, cancels need no lock); so `running + claimed` is at
    ///    most the limit at every instant.
    ///
    /// Under `--isolation serializable` the same transaction is serializable and so
    /// correct as a whole. The claim statement re-checks `state` on each row it
    /// updates, as every claim does.
    pub async fn claim_keyed(
        &self,
        key: &str,
        queue: &str,
        limit: i64,
        worker: Uuid,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>> {
        const LOCK: &str =
            "SELECT max_running FROM concurrency_keys WHERE concurrency_key = $1 FOR UPDATE";
        // Jobs enqueue their key's row; a job written some other way gets it here.
        const MAKE: &str = "INSERT INTO concurrency_keys (concurrency_key) VALUES ($1)
                            ON CONFLICT (concurrency_key) DO NOTHING";
        const COUNT: &str = "SELECT count(*) FROM jobs
                             WHERE concurrency_key = $1 AND concurrency_key IS NOT NULL AND state = $2";
        // The key's next jobs are picked once, in a CTE of their own: as the subquery
        // of `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE)`, PostgreSQL may
        // run the pick again for each row it updates (a nested-loop semi-join), and a
        // pick run again skips the rows this statement updated already and returns the
        // next ones: more than `n` rows are claimed (measured: 6 of 6 at a limit of 3).
        // The update re-checks each row's state against the state the pick locked, a
        // column rather than the constant, so that no plan reads the rows to update
        // through the queued jobs' index (see [`Store::claim_due`]).
        // The lease and `started_at` count from the claim itself (`clock_timestamp()`,
        // once per statement), not from the transaction's start (`now()`), which is
        // before the wait for the key's lock: a claim that waited gets its whole lease,
        // and the key's jobs start, as recorded, in the order they were claimed.
        const CLAIM: &str = "
WITH claim_time AS MATERIALIZED (SELECT clock_timestamp() AS at
), picked AS MATERIALIZED (
    SELECT id, state FROM jobs
    WHERE concurrency_key = $8 AND concurrency_key IS NOT NULL AND queue = $1
      AND state = ANY($2) AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM queue_settings WHERE queue_settings.queue = $1 AND paused)
    ORDER BY priority, run_at LIMIT $7 FOR UPDATE
), claimed AS (
    UPDATE jobs j SET state = $3, attempt = j.attempt + 1, lease_owner = $4,
        lease_expires_at = claim_time.at + $5::INT8 * INTERVAL '1 millisecond',
        started_at = claim_time.at, updated_at = claim_time.at
    FROM picked, claim_time WHERE j.id = picked.id AND j.state = picked.state
    RETURNING j.id, j.kind, j.queue, j.priority, j.payload, j.attempt, j.max_attempts, j.group_id,
              j.timeout_ms, j.started_at, j.traceparent
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message, at)
    SELECT id, ($2::TEXT[])[1], $3, attempt, $4, $6, started_at FROM claimed
)
SELECT id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms,
       traceparent, started_at FROM claimed";
        if limit < 1 {
            return Ok(Vec::new());
        }
        let transition = Transition::Claim;
        let from = transition.from_strs();
        let to = transition.to().as_str();
        let running = JobState::Running.as_str();
        let lease_ms = millis(lease);
        let label = transition.label();
        let rows = crate::in_transaction!(self, Isolation::ReadCommitted, tx => {
            let locked = match tx.query_opt(LOCK, &[&key]).await? {
                Some(row) => row,
                None => {
                    tx.execute(MAKE, &[&key]).await?;
                    match tx.query_opt(LOCK, &[&key]).await? {
                        Some(row) => row,
                        None => return Ok(Vec::new()),
                    }
                }
            };
            let max_running: Option<i64> = locked.get(0);
            let room = match max_running {
                Some(max) => {
                    let counted: i64 = tx.query_one(COUNT, &[&key, &running]).await?.get(0);
                    (max - counted).min(limit)
                }
                None => limit,
            };
            if room < 1 {
                return Ok(Vec::new());
            }
            Ok(tx
                .query(
                    CLAIM,
                    &[&queue, &from, &to, &worker, &lease_ms, &label, &room, &key],
                )
                .await?)
        })?;
        rows.iter().map(|row| claimed_job(row, Some(key))).collect()
    }
}
