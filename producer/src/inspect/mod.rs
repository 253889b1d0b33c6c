//! The one read API over the queue core: jobs (one with its history, pages of them,
//! waiting for some), queues, workers, stuck jobs and dead letters, and the operator's
//! actions on them (cancel, retry, requeue, purge, pause, resume). The `lc` command,
//! the deployment domain and (later) the HTTP API go through it, so there is one way of
//! reading and one set of output types: each is serde-serializable and is what `--json`
//! prints. Every failure is an [`InspectError`], whose [`InspectError::kind`] says
//! which of not found, conflict, invalid or unavailable it is.
//!
//! - `jobs`: [`Inspector::job`], [`Inspector::jobs`] (cursor pages), [`Inspector::wait`]
//! - `actions`: [`Inspector::cancel`], [`Inspector::retry`], [`Inspector::retry_all`],
//!   [`Inspector::requeue`], [`Inspector::purge`]
//! - `queues`: [`Inspector::queues`], [`Inspector::pause_queue`],
//!   [`Inspector::resume_queue`], [`Inspector::dead_letters`]
//! - `workers`: [`Inspector::workers`]
//! - `stuck`: [`Inspector::stuck`] and its two halves
//! - `throughput`: [`Inspector::throughput`], [`Inspector::queue_throughput`] (jobs
//!   finished per queue in time buckets)
//! - `concurrency`: [`Inspector::concurrency_limits`], [`Inspector::set_concurrency_limit`],
//!   [`Inspector::clear_concurrency_limit`]
//! - `cursor`: the opaque page cursor

mod actions;
mod concurrency;
mod cursor;
mod jobs;
mod queues;
mod stuck;
mod throughput;
mod workers;

use lc_shared::JobState;
use lc_shared::kind::Kinds;
use lc_shared::queue::{Hints, QueueError};
use lc_shared::store::{Store, StoreError};
use uuid::Uuid;

pub use actions::{PurgeParams, Purged, RequeueParams, Retried, Transitioned};
pub use jobs::{JobDetail, JobListParams, JobPage, Waited};
pub use lc_shared::queue::DeadLetter;
pub use lc_shared::store::{EventRow, JobRow, WorkerRow};
pub use queues::QueueStats;
pub use stuck::{Finding, StuckParams};
pub use throughput::QueueThroughput;
pub use workers::{Worker, WorkerStatus};

/// What kind of failure an [`InspectError`] is: what an HTTP handler turns into a
/// status (404, 409, 400, 503, 500).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// What was named does not exist.
    NotFound,
    /// It exists, but its state does not allow the action.
    Conflict,
    /// The request itself is wrong (a bad cursor, a state an action never takes).
    Invalid,
    /// The database or Redis could not be reached; trying again later may work.
    Unavailable,
    /// Anything else: a defect, or data no type holds.
    Internal,
}

impl ErrorKind {
    /// The kind of a store error: unreachable, or a conflict that outlasted the
    /// retries, is worth trying again; anything else is a defect.
    pub fn of_store(err: &StoreError) -> ErrorKind {
        if err.is_unavailable() || err.is_conflict() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Internal
        }
    }
}

/// An operator action on one job, for the message of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobAction {
    Cancel,
    Retry,
    Requeue,
}

/// Why a read or an action failed. Messages are the `lc` command's wording.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no job {0}")]
    JobNotFound(Uuid),
    /// The job's state does not allow the action (it may have changed just now).
    #[error("{}", refusal(*id, *state, *action))]
    NotApplicable {
        id: Uuid,
        state: JobState,
        action: JobAction,
    },
    /// A requeue without `force` of a job whose worker still heartbeats.
    #[error(
        "job {id} is held by worker {worker}, which is still heartbeating; \
         use `lc jobs cancel {id}` to stop it, or --force to requeue anyway"
    )]
    WorkerAlive { id: Uuid, worker: Uuid },
    #[error("{0}")]
    Invalid(String),
    /// Asked for something only Redis holds, of an inspector made without Redis.
    #[error("redis is unavailable: this reader has no connection to it")]
    NoRedis,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

fn refusal(id: Uuid, state: JobState, action: JobAction) -> String {
    match action {
        JobAction::Cancel => format!("job {id} is already {state}; nothing to cancel"),
        JobAction::Retry => {
            format!("job {id} is {state}; only dead or cancelled jobs can be retried")
        }
        JobAction::Requeue => format!("job {id} is {state}, not running; nothing to requeue"),
    }
}

impl InspectError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            InspectError::JobNotFound(_) => ErrorKind::NotFound,
            InspectError::NotApplicable { .. } | InspectError::WorkerAlive { .. } => {
                ErrorKind::Conflict
            }
            InspectError::Invalid(_) => ErrorKind::Invalid,
            InspectError::NoRedis | InspectError::Queue(_) => ErrorKind::Unavailable,
            InspectError::Store(err) => ErrorKind::of_store(err),
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, InspectError>;

/// Replaces secret-looking values of a job's payload before anyone sees it.
pub type Redaction = fn(&mut serde_json::Value);

/// Reads jobs, queues and workers, and applies operators' actions. Cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    store: Store,
    /// Redis: hints, dead letters and the event stream (see [`crate::events`]).
    pub(crate) hints: Option<Hints>,
    /// The kinds this reader knows: their time limits say when a running job looks
    /// stuck.
    kinds: Kinds,
    redact: Option<Redaction>,
    /// When set, this reader sees and acts on only this owner's jobs (see
    /// [`Inspector::for_owner`]).
    owner: Option<String>,
}

impl Inspector {
    /// A reader of this store and (when there is one) Redis, knowing these kinds.
    pub fn new(store: Store, hints: Option<Hints>, kinds: Kinds) -> Inspector {
        Inspector {
            store,
            hints,
            kinds,
            redact: None,
            owner: None,
        }
    }

    /// A reader that sees only `owner`'s jobs (those enqueued with
    /// [`lc_shared::NewJob::with_owner`]): any other job is "not found", exactly like
    /// one that does not exist, so that ids of others' jobs tell nothing. Reads and
    /// actions on single jobs and job lists are scoped; queue-wide views (queues,
    /// workers, stuck) and actions (pause, limits, purge, bulk retry) are not, and are
    /// for callers that may see everything.
    pub fn for_owner(mut self, owner: impl Into<String>) -> Inspector {
        self.owner = Some(owner.into());
        self
    }

    /// The owner this reader is scoped to, if any.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether this reader may see `job`.
    fn sees(&self, job: &JobRow) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|owner| job.owner.as_deref() == Some(owner))
    }

    /// Refuses, as not found, a job this reader may not see.
    async fn check_visible(&self, id: Uuid) -> Result {
        if self.owner.is_none() {
            return Ok(());
        }
        match self.store.job(id).await? {
            Some(job) if self.sees(&job) => Ok(()),
            _ => Err(InspectError::JobNotFound(id)),
        }
    }

    /// Passes every job payload this reader returns through `redact` (a domain's
    /// rule for what is secret, e.g. `lc_deployment::redact_secrets`).
    pub fn with_redaction(mut self, redact: Redaction) -> Inspector {
        self.redact = Some(redact);
        self
    }

    fn redacted(&self, mut job: JobRow) -> JobRow {
        if let Some(redact) = self.redact {
            redact(&mut job.payload);
        }
        job
    }

    /// Whether the database and Redis both answer now (what a readiness probe asks).
    pub async fn ping(&self) -> Result {
        self.store.ping().await?;
        self.hints()?.ping().await?;
        Ok(())
    }

    fn hints(&self) -> Result<&Hints> {
        self.hints.as_ref().ok_or(InspectError::NoRedis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_kind_they_are() {
        let id = Uuid::nil();
        assert_eq!(InspectError::JobNotFound(id).kind(), ErrorKind::NotFound);
        let refused = InspectError::NotApplicable {
            id,
            state: JobState::Succeeded,
            action: JobAction::Retry,
        };
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        assert_eq!(
            refused.to_string(),
            format!("job {id} is succeeded; only dead or cancelled jobs can be retried")
        );
        assert_eq!(
            InspectError::Invalid("bad".into()).kind(),
            ErrorKind::Invalid
        );
        assert_eq!(InspectError::NoRedis.kind(), ErrorKind::Unavailable);
        let corrupt = StoreError::Corrupt {
            column: "jobs.state",
            value: "x".into(),
        };
        assert_eq!(InspectError::from(corrupt).kind(), ErrorKind::Internal);
    }
}
