//! What a worker records about the jobs it holds, each statement fenced by the job's
//! state, its claim (attempt and claim time, see [`Claim`]) and lease owner:
//! completions (success, retry, death), heartbeats (lease extension), jobs handed back
//! on shutdown, log lines and drill effects.
//!
//! # Plans: `UNNEST((SELECT $1::UUID[]), ...)`
//!
//! The statements a job passes through by id (claim, heartbeat, completion, release)
//! take their rows as arrays. Given an array parameter's value, PostgreSQL's planner
//! counts its elements; its generic plan (made once per connection) assumes ten. A
//! plan for one to three ids then always looks cheaper than the generic one, so each
//! run was planned again: 0.2–0.5 ms a statement against 0.06 ms to run it, a third
//! of PostgreSQL's time at 500 jobs/s in a profile. The first array goes in through a
//! scalar subquery, whose value the planner does not look into: every plan assumes
//! at least ten rows (a multi-array `UNNEST` is estimated as long as its longest
//! array, so one hidden array is enough), the generic one wins after five runs, and
//! its nested loop over the primary key is the right plan for any batch.

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{Claim, Completion, HintTarget, hint_target};
use super::{Flush, Isolation, Replay, Result, Store, Turn, millis};
use crate::state::{JobState, RunResult, Transition, after_run};

/// The expected state of each row of a batch, one per id, bound as a column of the
/// statement's input (`UNNEST(ids, states)`) rather than as one constant: with a
/// constant (`state = 'running'`), PostgreSQL's planner may read the batch through the
/// state's partial index (`jobs_running_lease`, `jobs_queued_due`) and so read every
/// running or queued job. At serializable, those reads are predicate locks on every
/// page of that index, and every other worker's claims and completions conflict with
/// them: the main cause of serialization failures with several workers. Per row, the
/// rows are found by primary key only.
pub(super) fn by_id<'a>(ids: &[Uuid], state: &'a str) -> Vec<&'a str> {
    vec![state; ids.len()]
}

/// The statement of [`Store::record_completions`]: each row found by primary key and
/// fenced by its claim, updated (which locks it) with its history row in the same
/// statement. A process runs it in its turn ([`Turn::Always`]).
const COMPLETIONS: &str = "
WITH input AS (
    SELECT * FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $3::TEXT[], $4::INT8[], $5::TEXT[], $6::TEXT[],
                         $10::TEXT[], $11::TIMESTAMPTZ[])
        AS t(id, attempt, to_state, delay_ms, error, label, from_state, claimed_at)
), done AS (
    UPDATE jobs j SET
        state = i.to_state,
        run_at = CASE WHEN i.to_state = $7 THEN now() + i.delay_ms * INTERVAL '1 millisecond'
                      ELSE j.run_at END,
        dispatched = false,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = COALESCE(i.error, j.last_error),
        finished_at = CASE WHEN i.to_state = $7 THEN NULL ELSE now() END,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.attempt = i.attempt AND j.state = i.from_state AND j.lease_owner = $9
      AND j.started_at = i.claimed_at
    RETURNING j.id, j.attempt, i.to_state, i.error, i.label
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, $8, to_state, attempt, $9, COALESCE(label || ': ' || error, label) FROM done
)
SELECT id FROM done";

/// The input of the completion statement, one array per column: each completion's
/// transition (by [`after_run`]) decides its target state, label and error.
struct CompletionColumns<'a> {
    ids: Vec<Uuid>,
    attempts: Vec<i64>,
    claimed_at: Vec<chrono::DateTime<chrono::Utc>>,
    to_states: Vec<&'static str>,
    delays: Vec<i64>,
    errors: Vec<Option<&'a str>>,
    labels: Vec<&'static str>,
    /// `running` for each row: see [`by_id`].
    from_states: Vec<&'static str>,
}

impl<'a> CompletionColumns<'a> {
    fn new(completions: &'a [Completion]) -> CompletionColumns<'a> {
        let mut columns = CompletionColumns {
            ids: Vec::with_capacity(completions.len()),
            attempts: Vec::with_capacity(completions.len()),
            claimed_at: Vec::with_capacity(completions.len()),
            to_states: Vec::with_capacity(completions.len()),
            delays: Vec::with_capacity(completions.len()),
            errors: Vec::with_capacity(completions.len()),
            labels: Vec::with_capacity(completions.len()),
            from_states: Vec::new(),
        };
        for completion in completions {
            let transition = after_run(
                &completion.result,
                completion.attempt,
                completion.max_attempts,
            );
            columns.ids.push(completion.id);
            columns.attempts.push(completion.attempt);
            columns.claimed_at.push(completion.claimed_at);
            columns.to_states.push(transition.to().as_str());
            columns.delays.push(completion.retry_delay_ms);
            columns.errors.push(match &completion.result {
                RunResult::Succeeded => None,
                RunResult::Retryable(error) | RunResult::Fatal(error) => Some(error.as_str()),
            });
            columns.labels.push(transition.label());
        }
        columns.from_states = by_id(&columns.ids, JobState::Running.as_str());
        columns
    }
}

impl Store {
    /// Records finished runs in one statement. Each row applies only while the job is
    /// still running under this worker and attempt; the ids that applied are returned
    /// (a missing id was fenced off: its lease expired, or it was cancelled).
    pub async fn record_completions(
        &self,
        worker: Uuid,
        completions: &[Completion],
    ) -> Result<Vec<Uuid>> {
        // In this process's turn: a worker's completions and heartbeats change the same
        // rows, and two such statements at once could deadlock (see [`Turn::Always`]).
        // Before the turn, each locked its rows in id order first (`SELECT ... ORDER BY
        // id FOR UPDATE`), which wrote every row twice: measured with
        // pg_stat_statements in one-worker drains, 31.6 µs of statement time per job
        // with the locking read and 24.0–25.7 without it.
        let columns = CompletionColumns::new(completions);
        let queued = JobState::Queued.as_str();
        let running = JobState::Running.as_str();
        let params: [&(dyn ToSql + Sync); 11] = [
            &columns.ids,
            &columns.attempts,
            &columns.to_states,
            &columns.delays,
            &columns.errors,
            &columns.labels,
            &queued,
            &running,
            &worker,
            &columns.from_states,
            &columns.claimed_at,
        ];
        let rows = self
            .statement_in_turn(
                Turn::Always,
                Isolation::ReadCommitted,
                Replay::Safe,
                Flush::Wait,
                COMPLETIONS,
                &params,
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Extends the leases of the jobs this worker runs, in one statement; returns the
    /// ids it still holds. A job missing from the answer was taken away (lease expired
    /// and swept, or cancelled, or its claim lost in a crash) and its handler must stop.
    pub async fn extend_leases(
        &self,
        worker: Uuid,
        held: &[Claim],
        lease: std::time::Duration,
    ) -> Result<Vec<Uuid>> {
        // In this process's turn, as completions: see [`Turn::Always`].
        const SQL: &str = "
UPDATE jobs j SET lease_expires_at = now() + $3::INT8 * INTERVAL '1 millisecond'
FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $4::TEXT[], $6::TIMESTAMPTZ[])
    AS h(id, attempt, state, claimed_at)
WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = h.state AND j.lease_owner = $5
  AND j.started_at = h.claimed_at
RETURNING j.id";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts, claimed_at) = claim_columns(held);
        let running = by_id(&ids, JobState::Running.as_str());
        let lease_ms = millis(lease);
        // See [`Flush`]: an extension lost in a crash is an earlier expiry.
        let rows = self
            .statement_in_turn(
                Turn::Always,
                Isolation::ReadCommitted,
                Replay::Safe,
                Flush::Skip,
                SQL,
                &[&ids, &attempts, &lease_ms, &running, &worker, &claimed_at],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Hands back jobs this worker could not finish before shutting down: queued again
    /// at once, the attempt not counted. Returns where their hints go.
    pub async fn release(&self, worker: Uuid, held: &[Claim]) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
WITH released AS (
    UPDATE jobs j SET state = $4, run_at = now(), dispatched = true, lease_owner = NULL,
        lease_expires_at = NULL, max_attempts = j.max_attempts + 1, updated_at = now()
    FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $7::TEXT[], $8::TIMESTAMPTZ[])
        AS h(id, attempt, state, claimed_at)
    WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = h.state AND j.lease_owner = $5
      AND j.started_at = h.claimed_at
    RETURNING j.id, j.attempt, j.queue, j.priority
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, $3, $4, attempt, $5, $6 FROM released
)
SELECT id, queue, priority FROM released";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts, claimed_at) = claim_columns(held);
        let transition = Transition::Release;
        let running = JobState::Running.as_str();
        let queued = transition.to().as_str();
        let label = transition.label();
        let rows = self
            .statement_in_turn(
                Turn::Always,
                Isolation::ReadCommitted,
                Replay::Safe,
                Flush::Wait,
                SQL,
                &[
                    &ids,
                    &attempts,
                    &running,
                    &queued,
                    &worker,
                    &label,
                    &by_id(&ids, running),
                    &claimed_at,
                ],
            )
            .await?;
        rows.iter().map(hint_target).collect()
    }

    /// Appends a log line (not a transition) to a job's history, only while `claim`
    /// still holds it, so a fenced-off worker cannot write into a later attempt's story.
    pub async fn append_log(&self, claim: &Claim, worker: Uuid, message: &str) -> Result {
        const SQL: &str = "
INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
SELECT $1, NULL, NULL, $2, $3, $4
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND attempt = $2 AND state = $5
                                   AND started_at = $6)";
        let running = JobState::Running.as_str();
        // Read committed: one statement; its `EXISTS` sees the row as committed when
        // the statement starts, so a line lands in the attempt that was live then,
        // exactly as if it had been serialized just before a concurrent transition.
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            SQL,
            &[
                &claim.id,
                &claim.attempt,
                &worker,
                &message,
                &running,
                &claim.claimed_at,
            ],
        )
        .await?;
        Ok(())
    }

    /// Test and drill support: records that a handler's effect happened for an attempt,
    /// only while its claim is the job's live one (running, same attempt and claim
    /// time, lease held by `worker`), so the drills prove that a stale attempt can
    /// record nothing. The job's row is locked (`FOR UPDATE`) so that, at read
    /// committed too, no transition commits between the check and the write. Returns
    /// whether it was recorded.
    pub async fn record_effect(&self, claim: &Claim, worker: Uuid) -> Result<bool> {
        const SQL: &str = "
INSERT INTO job_effects (job_id, attempt, worker_id)
SELECT id, attempt, lease_owner FROM jobs
WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = $4 AND started_at = $5
FOR UPDATE
RETURNING job_id";
        let running = JobState::Running.as_str();
        // Not replayed after an unknown outcome: a second row would look like the
        // effect happening twice.
        // Read committed: the locking read re-checks its condition on the newest
        // version of the job's row and holds it until the insert commits.
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Unsafe,
                SQL,
                &[
                    &claim.id,
                    &claim.attempt,
                    &worker,
                    &running,
                    &claim.claimed_at,
                ],
            )
            .await?;
        Ok(rows.len() == 1)
    }
}

/// The columns of a batch of claims, as the statements take them.
fn claim_columns(held: &[Claim]) -> (Vec<Uuid>, Vec<i64>, Vec<chrono::DateTime<chrono::Utc>>) {
    (
        held.iter().map(|claim| claim.id).collect(),
        held.iter().map(|claim| claim.attempt).collect(),
        held.iter().map(|claim| claim.claimed_at).collect(),
    )
}
