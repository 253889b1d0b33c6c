//! What operators do to jobs: cancel, retry (one, or every dead or cancelled one),
//! requeue a running job whose worker is gone, purge finished ones. Each change is an
//! operator transition of the state machine, applied by the store under a row lock.

use std::time::Duration;

use lc_shared::JobState;
use lc_shared::state::Transition;
use lc_shared::store::OperatorResult;
use uuid::Uuid;

use super::{InspectError, Inspector, JobAction, Result};

/// Most jobs one [`Inspector::retry_all`] sends back.
const MAX_BULK_RETRY: i64 = 100_000;

/// Jobs deleted per transaction by [`Inspector::purge`], at most.
const MAX_PURGE_BATCH: i64 = 10_000;

/// A job an action moved: from `was` to `state`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transitioned {
    pub id: Uuid,
    pub was: JobState,
    pub state: JobState,
}

/// What a bulk retry did: the jobs sent back, and why the others were not (each
/// message is the [`InspectError`] that job met, e.g. it was retried by someone else
/// meanwhile).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Retried {
    pub retried: Vec<Uuid>,
    pub refused: Vec<String>,
}

/// How [`Inspector::requeue`] decides that a job's worker is gone.
#[derive(Clone, Copy, Debug)]
pub struct RequeueParams {
    /// Requeue even if the worker still heartbeats (its attempt is fenced off).
    pub force: bool,
    /// A worker whose last heartbeat is older than this counts as gone.
    pub dead_after: Duration,
}

impl Default for RequeueParams {
    fn default() -> Self {
        RequeueParams {
            force: false,
            dead_after: Duration::from_secs(30),
        }
    }
}

/// Which finished jobs [`Inspector::purge`] deletes.
#[derive(Clone, Copy, Debug)]
pub struct PurgeParams {
    /// `succeeded`, `dead` or `cancelled`.
    pub state: JobState,
    /// Only jobs finished more than this long ago.
    pub older_than: Duration,
    /// Jobs deleted per transaction (1 to 10,000).
    pub batch: i64,
}

/// What a purge deleted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub state: JobState,
    pub deleted: u64,
}

impl Inspector {
    /// Cancels a queued or running job (a running one's handler is stopped at its
    /// worker's next heartbeat).
    pub async fn cancel(&self, id: Uuid) -> Result<Transitioned> {
        self.transition(
            id,
            Transition::Cancel,
            JobAction::Cancel,
            "cancelled by operator",
        )
        .await
    }

    /// Sends a dead or cancelled job back to the queue with fresh attempts.
    pub async fn retry(&self, id: Uuid) -> Result<Transitioned> {
        self.transition(
            id,
            Transition::Revive,
            JobAction::Retry,
            "retried by operator",
        )
        .await
    }

    /// Retries every job in `state` (dead or cancelled), of one kind if given.
    pub async fn retry_all(&self, state: JobState, kind: Option<&str>) -> Result<Retried> {
        if !Transition::Revive.from().contains(&state) {
            return Err(InspectError::Invalid(format!(
                "only dead or cancelled jobs can be retried, not {state} ones"
            )));
        }
        let ids = self
            .store
            .job_ids_in_state(state, kind, MAX_BULK_RETRY)
            .await?;
        let mut done = Retried::default();
        for id in ids {
            match self.retry(id).await {
                Ok(_) => done.retried.push(id),
                Err(err @ (InspectError::NotApplicable { .. } | InspectError::JobNotFound(_))) => {
                    done.refused.push(err.to_string());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(done)
    }

    /// Puts a running job back in the queue now, without waiting for its lease to
    /// expire: refused while its worker still heartbeats, unless `force`.
    pub async fn requeue(&self, id: Uuid, params: RequeueParams) -> Result<Transitioned> {
        let job = self
            .store
            .job(id)
            .await?
            .ok_or(InspectError::JobNotFound(id))?;
        if !self.sees(&job) {
            return Err(InspectError::JobNotFound(id));
        }
        if job.state != JobState::Running {
            return Err(InspectError::NotApplicable {
                id,
                state: job.state,
                action: JobAction::Requeue,
            });
        }
        if let (false, Some(owner)) = (params.force, job.lease_owner) {
            let alive = self.store.workers(3600).await?.into_iter().any(|worker| {
                worker.id == owner
                    && worker.stopped_at.is_none()
                    && worker.heartbeat_age_secs < params.dead_after.as_secs_f64()
            });
            if alive {
                return Err(InspectError::WorkerAlive { id, worker: owner });
            }
        }
        self.transition(id, Transition::Requeue, JobAction::Requeue, "worker gone")
            .await
    }

    /// Deletes finished jobs and their history, in small transactions.
    pub async fn purge(&self, params: PurgeParams) -> Result<Purged> {
        if !params.state.is_terminal() {
            return Err(InspectError::Invalid(
                "state must be succeeded, dead or cancelled (purge never deletes live jobs)".into(),
            ));
        }
        let older_than_secs = i64::try_from(params.older_than.as_secs()).unwrap_or(i64::MAX);
        let deleted = self
            .store
            .purge(
                params.state,
                older_than_secs,
                params.batch.clamp(1, MAX_PURGE_BATCH),
            )
            .await?;
        Ok(Purged {
            state: params.state,
            deleted,
        })
    }

    async fn transition(
        &self,
        id: Uuid,
        transition: Transition,
        action: JobAction,
        message: &str,
    ) -> Result<Transitioned> {
        self.check_visible(id).await?;
        match self
            .store
            .operator_transition(id, transition, message)
            .await?
        {
            OperatorResult::Applied { was } => Ok(Transitioned {
                id,
                was,
                state: transition.to(),
            }),
            OperatorResult::NotApplicable(state) => {
                Err(InspectError::NotApplicable { id, state, action })
            }
            OperatorResult::NotFound => Err(InspectError::JobNotFound(id)),
        }
    }
}
