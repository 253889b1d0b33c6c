//! The types the job statements take and give back (jobs and their events as
//! operators see them, claimed jobs, completions, hint targets, outcomes), and how
//! a database row becomes one.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::row::RowIndex;
use uuid::Uuid;

use super::{Result, StoreError};
use crate::job::{JobKind, Priority};
use crate::state::{JobState, RunResult};

/// Where a hint for a job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintTarget {
    pub id: Uuid,
    pub queue: String,
    pub priority: Priority,
}

/// The answer to an enqueue, one per job asked for, in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    /// False when the idempotency key named an existing job, which is returned instead.
    pub created: bool,
    /// Set when the enqueuer should send a hint now (created, due, and not left to
    /// the sweeper).
    pub hint: Option<HintTarget>,
}

/// One claim of a job: the fencing token of everything its run records (outcome,
/// lease extensions, effects, log lines, a hand-back), checked with the lease owner
/// and the `running` state by every statement that writes for the run.
///
/// The attempt number alone does not tell two claims apart. On PostgreSQL a claim does
/// not wait for the disk (see `Flush`), so a crash can lose one: the job is `queued`
/// again with the attempt count from before, and its next claim carries the same
/// attempt number, and the same lease owner when the same worker makes it, while the
/// run of the lost claim may still be going. `claimed_at` is the claim's `started_at`,
/// the time of its transaction, which a claim made again (after the server's restart)
/// never shares with the lost one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub id: Uuid,
    pub attempt: i64,
    pub claimed_at: DateTime<Utc>,
}

/// A job a worker now holds.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub kind: JobKind,
    pub queue: String,
    pub priority: Priority,
    pub payload: serde_json::Value,
    /// With `claimed_at`, the fencing token: only this claim may record the job's
    /// outcome.
    pub attempt: i64,
    pub max_attempts: i64,
    pub group_id: Option<Uuid>,
    /// The job's own time limit per attempt, if its producer set one.
    pub timeout: Option<std::time::Duration>,
    /// The job's concurrency key: while this job runs it holds one of the key's slots.
    pub concurrency_key: Option<String>,
    /// The W3C `traceparent` stored at enqueue, if the producer exported traces.
    pub traceparent: Option<String>,
    /// When this claim was made: with the attempt, its fencing token (see [`Claim`]).
    pub claimed_at: DateTime<Utc>,
}

impl ClaimedJob {
    /// The claim this run holds the job by.
    pub fn claim(&self) -> Claim {
        Claim {
            id: self.id,
            attempt: self.attempt,
            claimed_at: self.claimed_at,
        }
    }
}

/// A finished run, as the worker's completer hands it to the store.
#[derive(Clone, Debug)]
pub struct Completion {
    pub id: Uuid,
    pub attempt: i64,
    /// The claim's time: with the attempt, the run's fencing token (see [`Claim`]).
    pub claimed_at: DateTime<Utc>,
    pub max_attempts: i64,
    pub result: RunResult,
    /// Wait before the next attempt, when the result is retryable.
    pub retry_delay_ms: i64,
}

/// What `cancel` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled { was: JobState },
    AlreadyFinished(JobState),
    NotFound,
}

/// A job as operators see it.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRow {
    pub id: Uuid,
    pub kind: JobKind,
    pub queue: String,
    pub priority: Priority,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempt: i64,
    pub max_attempts: i64,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub group_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub concurrency_key: Option<String>,
    /// Who enqueued it through the HTTP API (see [`crate::NewJob::owner`]).
    pub owner: Option<String>,
}

/// One line of a job's history: a transition (with `to_state`) or a log line.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub from_state: Option<JobState>,
    pub to_state: Option<JobState>,
    pub attempt: i64,
    pub worker_id: Option<Uuid>,
    pub message: Option<String>,
}

/// Filters of `lc jobs ls`. Jobs come newest first, by `(created_at, id)`: a total
/// order that a job keeps for life, so a page that starts below the last row of the
/// one before (`before`) neither repeats nor skips a job, however many are added
/// meanwhile (they sort above).
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub group_id: Option<Uuid>,
    /// Only jobs of this owner (see [`crate::NewJob::owner`]).
    pub owner: Option<String>,
    pub older_than_secs: Option<i64>,
    /// Only jobs that sort after this `(created_at, id)`, i.e. older ones.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Per queue and state, how many jobs there are.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub state: JobState,
    pub count: i64,
}

/// A job `lc stuck` lists, with why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StuckJob {
    pub id: Uuid,
    pub kind: JobKind,
    pub queue: String,
    pub state: JobState,
    pub attempt: i64,
    pub lease_owner: Option<Uuid>,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    pub reason: String,
}

/// What an operator transition found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorResult {
    Applied {
        was: JobState,
    },
    /// The job is in a state this transition does not start from.
    NotApplicable(JobState),
    NotFound,
}

/// A running job whose lease expired, as the sweeper took it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredLease {
    pub id: Uuid,
    /// `queued` again, or `dead` when its attempts were used up.
    pub state: JobState,
    /// Its concurrency key, whose slot it held until now.
    pub concurrency_key: Option<String>,
}

/// A concurrency key as operators see it: its limit and how many of its jobs run and
/// wait now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConcurrencyKeyRow {
    pub key: String,
    /// At most this many of its jobs run at once; `None`: no limit.
    pub limit: Option<i64>,
    pub running: i64,
    /// Queued jobs of the key (due or not).
    pub waiting: i64,
    pub updated_at: DateTime<Utc>,
}

/// A running job `lc stuck` looks at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunningJob {
    pub id: Uuid,
    pub kind: JobKind,
    pub queue: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub payload: serde_json::Value,
    pub lease_owner: Option<Uuid>,
    pub lease_expired: bool,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub running_secs: f64,
    /// The holder's last heartbeat age in seconds; `None` when no worker row exists.
    pub worker_heartbeat_age_secs: Option<f64>,
    pub worker_stopped: bool,
    pub last_error: Option<String>,
    /// The job's own time limit per attempt, if its producer set one.
    pub timeout: Option<Duration>,
}

/// A queued job that has been due for a while.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WaitingJob {
    pub id: Uuid,
    pub kind: JobKind,
    pub queue: String,
    pub attempt: i64,
    pub due_secs: f64,
    pub dispatched: bool,
    pub queue_paused: bool,
    pub last_error: Option<String>,
}

/// The columns [`job_row`] reads, in its order.
pub(super) const JOB_COLUMNS: &str = "id, kind, queue, priority, state, payload, attempt, max_attempts, run_at, \
    lease_owner, lease_expires_at, last_error, idempotency_key, group_id, created_at, \
    updated_at, started_at, finished_at, concurrency_key, owner";

pub(super) fn job_row(row: &Row) -> Result<JobRow> {
    Ok(JobRow {
        id: row.get(0),
        kind: kind_at(row, 1),
        queue: row.get(2),
        priority: priority_at(row, 3)?,
        state: state_at(row, 4, "jobs.state")?,
        payload: row.get(5),
        attempt: row.get(6),
        max_attempts: row.get(7),
        run_at: row.get(8),
        lease_owner: row.get(9),
        lease_expires_at: row.get(10),
        last_error: row.get(11),
        idempotency_key: row.get(12),
        group_id: row.get(13),
        created_at: row.get(14),
        updated_at: row.get(15),
        started_at: row.get(16),
        finished_at: row.get(17),
        concurrency_key: row.get(18),
        owner: row.get(19),
    })
}

pub(super) fn hint_target(row: &Row) -> Result<HintTarget> {
    Ok(HintTarget {
        id: row.get("id"),
        queue: row.get("queue"),
        priority: priority_at(row, "priority")?,
    })
}

/// A job a claim statement returned; `concurrency_key` is the key the claim was made
/// under (claims of jobs without a key take only those).
pub(super) fn claimed_job(row: &Row, concurrency_key: Option<&str>) -> Result<ClaimedJob> {
    Ok(ClaimedJob {
        id: row.get(0),
        kind: kind_at(row, 1),
        queue: row.get(2),
        priority: priority_at(row, 3)?,
        payload: row.get(4),
        attempt: row.get(5),
        max_attempts: row.get(6),
        group_id: row.get(7),
        timeout: timeout_at(row, 8)?,
        concurrency_key: concurrency_key.map(str::to_owned),
        traceparent: row.get(9),
        claimed_at: row.get(10),
    })
}

pub(super) fn event_row(row: &Row) -> Result<EventRow> {
    Ok(EventRow {
        at: row.get(0),
        from_state: optional_state_at(row, 1, "job_events.from_state")?,
        to_state: optional_state_at(row, 2, "job_events.to_state")?,
        attempt: row.get(3),
        worker_id: row.get(4),
        message: row.get(5),
    })
}

// Values whose column type is wider than their Rust type: read as stored, then
// checked, so that a value nothing can hold is a [`StoreError::Corrupt`] naming it
// instead of a default or a panic in `Row::get`.

/// A job state as stored (text); `column` names it in the error.
pub(super) fn job_state(text: &str, column: &'static str) -> Result<JobState> {
    text.parse().map_err(|_| StoreError::Corrupt {
        column,
        value: text.to_owned(),
    })
}

/// The job state in column `idx` of `row`.
pub(super) fn state_at<I: RowIndex + fmt::Display>(
    row: &Row,
    idx: I,
    column: &'static str,
) -> Result<JobState> {
    job_state(row.get(idx), column)
}

/// The job state, if any, in column `idx` of `row`.
fn optional_state_at<I: RowIndex + fmt::Display>(
    row: &Row,
    idx: I,
    column: &'static str,
) -> Result<Option<JobState>> {
    row.get::<_, Option<&str>>(idx)
        .map(|text| job_state(text, column))
        .transpose()
}

/// A priority as stored (`jobs.priority`, see [`Priority::as_db`]).
fn priority(value: i64) -> Result<Priority> {
    Priority::from_db(value).ok_or_else(|| StoreError::Corrupt {
        column: "jobs.priority",
        value: value.to_string(),
    })
}

/// The kind in column `idx` of `row` (interned: see [`JobKind::from_stored`]).
pub(super) fn kind_at<I: RowIndex + fmt::Display>(row: &Row, idx: I) -> JobKind {
    JobKind::from_stored(row.get(idx))
}

/// The priority in column `idx` of `row`.
fn priority_at<I: RowIndex + fmt::Display>(row: &Row, idx: I) -> Result<Priority> {
    priority(row.get(idx))
}

/// A job's own time limit (`jobs.timeout_ms`, positive when set) in column `idx`.
pub(super) fn timeout_at<I: RowIndex + fmt::Display>(
    row: &Row,
    idx: I,
) -> Result<Option<Duration>> {
    row.get::<_, Option<i64>>(idx)
        .map(|ms| match u64::try_from(ms) {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(StoreError::Corrupt {
                column: "jobs.timeout_ms",
                value: ms.to_string(),
            }),
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_stored_values_are_errors_that_name_them() {
        assert_eq!(
            job_state("running", "jobs.state").expect("known"),
            JobState::Running
        );
        let err = job_state("finished", "jobs.state").expect_err("unknown state");
        assert!(matches!(
            &err,
            StoreError::Corrupt { column: "jobs.state", value } if value == "finished"
        ));
        assert_eq!(
            err.to_string(),
            r#"unexpected value "finished" in jobs.state"#
        );
        assert_eq!(priority(0).expect("known"), Priority::High);
        let err = priority(7).expect_err("out of range");
        assert_eq!(err.to_string(), r#"unexpected value "7" in jobs.priority"#);
        assert!(!err.is_rejected() && !err.is_unavailable() && !err.is_conflict());
    }
}
