//! SQL behind the operator commands: cancel, revive and requeue, stuck jobs, bulk
//! retry, purge, queue throughput.

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{
    CancelOutcome, OperatorResult, RunningJob, WaitingJob, job_state, kind_at, state_at, timeout_at,
};
use super::{Isolation, Replay, Result, Store, StoreError, retry};
use crate::state::{JobState, Transition};

/// The conditional update of an operator transition: `$1` id, `$2` the state it was
/// read in, `$3` attempt, `$4` the target state, `$5` the message (used by some).
fn operator_update(transition: Transition) -> Result<String> {
    let set = match transition {
        Transition::Cancel => {
            "state = $4, lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), \
             last_error = COALESCE(last_error, $5)"
        }
        // A dead job gets as many new attempts as it had.
        Transition::Revive => {
            "state = $4, run_at = now(), dispatched = false, finished_at = NULL, \
             max_attempts = attempt + max_attempts"
        }
        // The worker is gone: the attempt counts, but the job gets at least one more.
        Transition::Requeue => {
            "state = $4, run_at = now(), dispatched = false, lease_owner = NULL, \
             lease_expires_at = NULL, max_attempts = GREATEST(max_attempts, attempt + 1), \
             last_error = $5"
        }
        other => {
            return Err(StoreError::Invalid(format!(
                "{other:?} is not an operator transition"
            )));
        }
    };
    Ok(format!(
        "UPDATE jobs SET {set}, updated_at = now() WHERE id = $1 AND state = $2 AND attempt = $3"
    ))
}

/// Cancels those of the named jobs that are still `queued`, inside the caller's own
/// transaction: they are cancelled if and only if the caller commits (a producer that
/// replaces a delayed job cancels the old one and enqueues the new one together). A job
/// that is running or finished is left alone; the ids returned are the ones cancelled.
/// One conditional statement with its event rows, following the state machine's
/// `cancel` transition, so it is correct at any isolation level: a job claimed
/// meanwhile is no longer `queued` on the row version the update writes.
pub async fn cancel_queued_in_transaction(
    transaction: &deadpool_postgres::Transaction<'_>,
    ids: &[Uuid],
    reason: &str,
) -> Result<Vec<Uuid>> {
    const SQL: &str = "
WITH cancelled AS (
    UPDATE jobs SET state = $2, finished_at = now(), updated_at = now(),
        last_error = COALESCE(last_error, $3)
    WHERE id = ANY($1) AND state = $4
    RETURNING id, attempt
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, $4, $2, attempt, $5 FROM cancelled
)
SELECT id FROM cancelled";
    debug_assert!(Transition::Cancel.from().contains(&JobState::Queued));
    let to = Transition::Cancel.to().as_str();
    let queued = JobState::Queued.as_str();
    let label = format!("{}: {reason}", Transition::Cancel.label());
    let rows = transaction
        .query(SQL, &[&ids, &to, &reason, &queued, &label])
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

impl Store {
    /// Cancels a queued or running job. A running job's worker notices at its next
    /// heartbeat (the job is no longer running under its lease) and stops the handler.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<CancelOutcome> {
        self.operator_transition(id, Transition::Cancel, reason)
            .await
            .map(|found| match found {
                OperatorResult::Applied { was } => CancelOutcome::Cancelled { was },
                OperatorResult::NotApplicable(state) => CancelOutcome::AlreadyFinished(state),
                OperatorResult::NotFound => CancelOutcome::NotFound,
            })
    }

    /// Applies an operator's transition (cancel, revive, requeue) to one job, in one
    /// transaction: read its state and lock the row (`FOR UPDATE`), check the state
    /// machine allows it, update under the same state and attempt, append the event.
    /// Read committed: the decision is made on a locked row, which no other
    /// transaction can change until this one ends.
    pub async fn operator_transition(
        &self,
        id: Uuid,
        transition: Transition,
        message: &str,
    ) -> Result<OperatorResult> {
        let update = operator_update(transition)?;
        let to = transition.to().as_str();
        retry(Replay::Safe, || {
            let update = update.as_str();
            async move {
                let mut client = self.pool.get().await?;
                let tx = self.begin(&mut client, Isolation::ReadCommitted).await?;
                let Some(row) = tx
                    .query_opt(
                        "SELECT state, attempt FROM jobs WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok(OperatorResult::NotFound);
                };
                let state_text: String = row.get(0);
                let attempt: i64 = row.get(1);
                let state = job_state(&state_text, "jobs.state")?;
                if !transition.from().contains(&state) {
                    return Ok(OperatorResult::NotApplicable(state));
                }
                // Only some SET clauses use the message ($5); PostgreSQL refuses
                // parameters a statement does not use.
                let with_message: [&(dyn ToSql + Sync); 5] =
                    [&id, &state_text, &attempt, &to, &message];
                let params = if update.contains("$5") {
                    &with_message[..]
                } else {
                    &with_message[..4]
                };
                // The row is locked, so the update applies; should it not, report the
                // state it has now.
                if tx.execute(update, params).await? == 0 {
                    let now: String = tx
                        .query_one("SELECT state FROM jobs WHERE id = $1", &[&id])
                        .await?
                        .get(0);
                    return Ok(OperatorResult::NotApplicable(job_state(
                        &now,
                        "jobs.state",
                    )?));
                }
                tx.execute(
                    "INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &id,
                        &state_text,
                        &to,
                        &attempt,
                        &format!("{}: {message}", transition.label()),
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(OperatorResult::Applied { was: state })
            }
        })
        .await
    }

    /// Every running job (up to `limit`, longest running first) with what is known
    /// about its lease and worker.
    pub async fn running_jobs(&self, limit: i64) -> Result<Vec<RunningJob>> {
        const SQL: &str = concat!(
            "
SELECT j.id, j.kind, j.queue, j.attempt, j.max_attempts, j.payload, j.lease_owner,
       ",
            lease_expired!(),
            ", j.lease_expires_at, j.started_at,
       EXTRACT(EPOCH FROM (now() - COALESCE(j.started_at, j.updated_at)))::FLOAT8,
       EXTRACT(EPOCH FROM (now() - w.last_heartbeat_at))::FLOAT8,
       w.stopped_at IS NOT NULL, j.last_error, j.timeout_ms
FROM jobs j LEFT JOIN workers w ON w.id = j.lease_owner
WHERE j.state = $1
ORDER BY j.started_at LIMIT $2"
        );
        let running = JobState::Running.as_str();
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client.query(SQL, &[&running, &limit]).await?;
            rows.iter()
                .map(|row| {
                    Ok(RunningJob {
                        id: row.get(0),
                        kind: kind_at(row, 1),
                        queue: row.get(2),
                        attempt: row.get(3),
                        max_attempts: row.get(4),
                        payload: row.get(5),
                        lease_owner: row.get(6),
                        lease_expired: row.get::<_, Option<bool>>(7).unwrap_or(false),
                        lease_expires_at: row.get(8),
                        started_at: row.get(9),
                        running_secs: row.get(10),
                        worker_heartbeat_age_secs: row.get(11),
                        worker_stopped: row.get::<_, Option<bool>>(12).unwrap_or(false),
                        last_error: row.get(13),
                        timeout: timeout_at(row, 14)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// Queued jobs due for more than `older_than_secs`, oldest first.
    pub async fn waiting_jobs(&self, older_than_secs: i64, limit: i64) -> Result<Vec<WaitingJob>> {
        const SQL: &str = "
SELECT j.id, j.kind, j.queue, j.attempt, EXTRACT(EPOCH FROM (now() - j.run_at))::FLOAT8,
       j.dispatched, COALESCE(q.paused, false), j.last_error
FROM jobs j LEFT JOIN queue_settings q ON q.queue = j.queue
WHERE j.state = $1 AND j.run_at < now() - $2::INT8 * INTERVAL '1 second'
ORDER BY j.run_at LIMIT $3";
        let queued = JobState::Queued.as_str();
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(SQL, &[&queued, &older_than_secs, &limit])
                .await?;
            Ok(rows
                .iter()
                .map(|row| WaitingJob {
                    id: row.get(0),
                    kind: kind_at(row, 1),
                    queue: row.get(2),
                    attempt: row.get(3),
                    due_secs: row.get(4),
                    dispatched: row.get(5),
                    queue_paused: row.get(6),
                    last_error: row.get(7),
                })
                .collect())
        })
        .await
    }

    /// The states of the named jobs (unknown ids are left out).
    pub async fn job_states(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, JobState)>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query("SELECT id, state FROM jobs WHERE id = ANY($1)", &[&ids])
                .await?;
            rows.iter()
                .map(|row| Ok((row.get(0), state_at(row, 1, "jobs.state")?)))
                .collect()
        })
        .await
    }

    /// Ids of jobs in `state` (optionally of one kind), up to `limit`, for bulk retry.
    pub async fn job_ids_in_state(
        &self,
        state: JobState,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Uuid>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT id FROM jobs WHERE state = $1 AND ($2::TEXT IS NULL OR kind = $2)
                     ORDER BY updated_at LIMIT $3",
                    &[&state.as_str(), &kind, &limit],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// Deletes finished jobs (and their events) last changed more than `older_than_secs`
    /// ago, `batch` at a time so that no transaction grows large (CockroachDB prefers
    /// small ones). Returns how many jobs were deleted.
    pub async fn purge(&self, state: JobState, older_than_secs: i64, batch: i64) -> Result<u64> {
        // The literal state list lets the planner use the partial `jobs_finished` index.
        // Read committed: the picked rows are locked (`FOR UPDATE`, their condition
        // re-checked on the newest version), so no revive can slip in between reading
        // them and deleting their history.
        let pick = format!(
            "SELECT id FROM jobs WHERE state = $1 AND {}
               AND updated_at < now() - $2::INT8 * INTERVAL '1 second' LIMIT $3 FOR UPDATE",
            crate::state::terminal_states_sql()
        );
        let mut total = 0;
        loop {
            let deleted = retry(Replay::Safe, || async {
                let mut client = self.pool.get().await?;
                let tx = self.begin(&mut client, Isolation::ReadCommitted).await?;
                let ids: Vec<Uuid> = tx
                    .query(pick.as_str(), &[&state.as_str(), &older_than_secs, &batch])
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if ids.is_empty() {
                    return Ok(0);
                }
                tx.execute("DELETE FROM job_events WHERE job_id = ANY($1)", &[&ids])
                    .await?;
                tx.execute("DELETE FROM job_effects WHERE job_id = ANY($1)", &[&ids])
                    .await?;
                let deleted = tx
                    .execute(
                        "DELETE FROM jobs WHERE id = ANY($1) AND state = $2",
                        &[&ids, &state.as_str()],
                    )
                    .await?;
                tx.commit().await?;
                Ok(deleted)
            })
            .await?;
            total += deleted;
            if deleted < batch as u64 {
                return Ok(total);
            }
        }
    }

    /// Per queue, jobs that reached a terminal state in the last minute.
    pub async fn finished_last_minute(&self) -> Result<Vec<(String, i64)>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let sql = format!(
                "SELECT queue, count(*) FROM jobs
                 WHERE {} AND finished_at > now() - INTERVAL '1 minute'
                 GROUP BY queue",
                crate::state::terminal_states_sql()
            );
            let rows = client.query(sql.as_str(), &[]).await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// Every queue anybody configured or used: with jobs, paused, or served by a live worker.
    pub async fn known_queues(&self) -> Result<Vec<(String, bool)>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT q, bool_or(paused) FROM (
                         SELECT DISTINCT queue AS q, false AS paused FROM jobs WHERE state IN ($1, $2)
                         UNION ALL SELECT queue, paused FROM queue_settings
                         UNION ALL SELECT unnest(string_to_array(queues, ',')), false FROM workers
                             WHERE stopped_at IS NULL AND last_heartbeat_at > now() - INTERVAL '1 minute'
                     ) AS all_queues GROUP BY q ORDER BY q",
                    &[&JobState::Queued.as_str(), &JobState::Running.as_str()],
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// Whether a live worker (heartbeat within `within_secs`) serves `queue`.
    pub async fn queue_has_live_worker(&self, queue: &str, within_secs: i64) -> Result<bool> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM workers WHERE stopped_at IS NULL
                       AND last_heartbeat_at > now() - $2::INT8 * INTERVAL '1 second'
                       AND $1 = ANY(string_to_array(queues, ',')))",
                    &[&queue, &within_secs],
                )
                .await?;
            Ok(row.get(0))
        })
        .await
    }
}
