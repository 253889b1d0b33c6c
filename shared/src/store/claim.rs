//! Claims: a worker takes queued, due jobs, by the ids of hints or straight from a
//! queue, and holds them under a lease. The attempt number goes up by one: the fencing
//! token of everything the worker records afterwards. Claims by id take their ids as
//! `UNNEST((SELECT $1::UUID[]), ...)`: see the plans note in [`super::complete`].

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::complete::by_id;
use super::rows::{ClaimedJob, claimed_job};
use super::{Isolation, Replay, Result, ScanBound, Store, millis};
use crate::state::Transition;

/// The claim statement around a `WHERE` clause: $1.. are bound by the callers in the
/// order (ids or queue, from states, to state, worker, lease ms, label[, limit, lower
/// bound]). The claim's one source state (`queued`) is the first of the from states.
macro_rules! const_format_claim {
    ($where:literal) => {
        concat!(
            "WITH claimed AS (
    UPDATE jobs SET state = $3, attempt = attempt + 1, lease_owner = $4,
        lease_expires_at = now() + $5::INT8 * INTERVAL '1 millisecond',
        started_at = now(), updated_at = now() ",
            $where,
            "
    RETURNING id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, ($2::TEXT[])[1], $3, attempt, $4, $6 FROM claimed
)
SELECT id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms FROM claimed"
        )
    };
}

impl Store {
    async fn claim(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<ClaimedJob>> {
        let rows = self
            .statement(Isolation::ReadCommitted, Replay::Safe, sql, params)
            .await?;
        rows.iter().map(claimed_job).collect()
    }

    /// Claims the jobs named by hints, those still queued and due. A stale or
    /// duplicate hint simply claims nothing.
    pub async fn claim_by_ids(
        &self,
        ids: &[Uuid],
        worker: Uuid,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>> {
        // Each id with its expected state, as rows of the input: see [`by_id`].
        const SQL: &str = const_format_claim!(
            "WHERE (id, state) IN (SELECT id, state FROM UNNEST((SELECT $1::UUID[]), $7::TEXT[]) AS h(id, state))
               AND run_at <= now()"
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

    /// Claims up to `limit` due jobs of one queue straight from the database, highest
    /// priority and oldest first: the path that needs no hint (lost hints, Redis down).
    ///
    /// One queue per statement: with `FOR UPDATE SKIP LOCKED` and `LIMIT`, CockroachDB
    /// locks every row its locking read returns before the sort and limit above it when
    /// several queues are merged; over one queue the index `jobs_queued_due (queue,
    /// priority, run_at)` yields the rows already in order, so the limit sits under the
    /// lock. `SKIP LOCKED` keeps concurrent pollers off each other's rows; the update
    /// re-checks `state`, so a row claimed meanwhile by a hint is not claimed twice.
    /// `run_at >= bound` keeps the scan off the deleted-row markers of jobs claimed
    /// before (see [`ScanBound`]). Read committed: one conditional statement.
    pub async fn claim_due(
        &self,
        queue: &str,
        limit: i64,
        worker: Uuid,
        lease: std::time::Duration,
        bound: &mut ScanBound,
    ) -> Result<Vec<ClaimedJob>> {
        const SQL: &str = const_format_claim!(
            "WHERE id IN (SELECT id FROM jobs
                          WHERE state = ANY($2) AND queue = $1 AND run_at <= now()
                            AND ($8::TIMESTAMPTZ IS NULL OR run_at >= $8)
                            AND NOT EXISTS (SELECT 1 FROM queue_settings
                                            WHERE queue_settings.queue = $1 AND paused)
                          ORDER BY priority, run_at LIMIT $7 FOR UPDATE SKIP LOCKED)
               AND state = ANY($2)"
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
}
