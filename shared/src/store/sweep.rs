//! What the sweeper (and dispatch after a transactional enqueue) takes from the
//! database: expired leases, due jobs without a hint, and pages of due jobs for
//! rebuilding an emptied Redis.

use uuid::Uuid;

use super::rows::{ExpiredLease, HintTarget, hint_target, state_at};
use super::{Isolation, Replay, Result, ScanBound, Store};
use crate::state::{JobState, Transition};

impl Store {
    /// Takes back up to `limit` running jobs whose lease expired (database time): back
    /// to `queued`, or `dead` when their attempts are used up (the rule of
    /// [`crate::state::after_lease_expiry`]). Safe when several sweepers run it.
    /// `lease_expires_at >= bound` keeps the scan of `jobs_running_lease` off the
    /// deleted-row markers of leases ended before (see [`ScanBound`]). Read committed:
    /// one conditional statement; the update re-checks state and expiry on the newest
    /// version of each row, so a lease extended meanwhile is left alone. Each job
    /// comes back with its concurrency key, whose slot is free again.
    pub async fn expire_leases(
        &self,
        limit: i64,
        bound: &mut ScanBound,
    ) -> Result<Vec<ExpiredLease>> {
        const SQL: &str = concat!(
            "
WITH expired AS (
    UPDATE jobs SET
        state = CASE WHEN attempt >= max_attempts THEN $3 ELSE $2 END,
        run_at = now(),
        dispatched = false,
        finished_at = CASE WHEN attempt >= max_attempts THEN now() ELSE NULL END,
        last_error = 'lease expired: worker ' || COALESCE(lease_owner::TEXT, '?') || ' stopped heartbeating',
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND ",
            lease_expired!(),
            "
                   AND ($6::TIMESTAMPTZ IS NULL OR lease_expires_at >= $6) LIMIT $4)
      AND state = $1 AND ",
            lease_expired!(),
            "
    RETURNING id, state, attempt, last_error, concurrency_key
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, $1, state, attempt, $5 || ': ' || last_error FROM expired
)
SELECT id, state, concurrency_key FROM expired"
        );
        debug_assert_eq!(Transition::ExpireLease.from(), &[JobState::Running]);
        let running = JobState::Running.as_str();
        let queued = Transition::ExpireLease.to().as_str();
        let dead = JobState::Dead.as_str();
        let label = Transition::ExpireLease.label();
        let from = bound.next();
        let now = self.database_now().await?;
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&running, &queued, &dead, &limit, &label, &from],
            )
            .await?;
        bound.done(now, rows.len(), limit);
        rows.iter()
            .map(|row| {
                Ok(ExpiredLease {
                    id: row.get(0),
                    state: state_at(row, 1, "jobs.state")?,
                    concurrency_key: row.get(2),
                })
            })
            .collect()
    }

    /// Marks up to `limit` due, queued jobs that have no hint yet (delayed jobs, retries,
    /// swept or transactionally enqueued jobs) as dispatched and returns where their
    /// hints go. Oldest first. `run_at >= bound` keeps the scan of `jobs_undispatched`
    /// off the deleted-row markers of jobs dispatched before (see [`ScanBound`]). Read
    /// committed: one conditional statement.
    pub async fn take_undispatched(
        &self,
        limit: i64,
        bound: &mut ScanBound,
    ) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
UPDATE jobs SET dispatched = true
WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND NOT dispatched AND run_at <= now()
               AND ($3::TIMESTAMPTZ IS NULL OR run_at >= $3)
             ORDER BY run_at LIMIT $2)
  AND state = $1 AND NOT dispatched
RETURNING id, queue, priority";
        let queued = JobState::Queued.as_str();
        let from = bound.next();
        let now = self.database_now().await?;
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&queued, &limit, &from],
            )
            .await?;
        bound.done(now, rows.len(), limit);
        rows.iter().map(hint_target).collect()
    }

    /// Marks the named queued jobs as dispatched and returns where their hints go:
    /// used after a transactional enqueue committed, to dispatch without the sweeper.
    pub async fn take_by_ids(&self, ids: &[Uuid]) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
UPDATE jobs SET dispatched = true
WHERE id = ANY($1) AND state = $2 AND NOT dispatched AND run_at <= now()
RETURNING id, queue, priority";
        let queued = JobState::Queued.as_str();
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&ids, &queued],
            )
            .await?;
        rows.iter().map(hint_target).collect()
    }

    /// Undoes [`Store::take_undispatched`] for hints that could not be sent, so the
    /// next sweep tries again.
    pub async fn mark_undispatched(&self, ids: &[Uuid]) -> Result {
        let queued = JobState::Queued.as_str();
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "UPDATE jobs SET dispatched = false WHERE id = ANY($1) AND state = $2",
            &[&ids, &queued],
        )
        .await?;
        Ok(())
    }

    /// Due queued jobs of one queue, by id after `after`: what a rebuild of an emptied
    /// Redis sends hints for.
    pub async fn due_queued_page(
        &self,
        queue: &str,
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
SELECT id, queue, priority FROM jobs
WHERE state = $1 AND queue = $2 AND run_at <= now() AND id > $3
ORDER BY id LIMIT $4";
        let queued = JobState::Queued.as_str();
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&queued, &queue, &after, &limit],
            )
            .await?;
        rows.iter().map(hint_target).collect()
    }
}
