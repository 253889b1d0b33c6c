//! What a handler may use: its job's facts, its cancellation, a line in its history,
//! an effect recorded once per attempt, hints for jobs it enqueued, the worker's
//! metrics, and the state its registry was given. Not the worker itself: the store,
//! Redis and the other jobs stay out of a handler's reach.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use lc_shared::store::{ClaimedJob, Enqueued, error_chain};
use tokio_util::sync::CancellationToken;

use super::{ClaimTimes, JobError, Registry};
use crate::metrics::Metrics;
use crate::worker::Worker;

/// One attempt of one job, as its handler sees it.
pub struct JobContext {
    job: ClaimedJob,
    worker: Arc<Worker>,
    registry: Registry,
    cancel: CancellationToken,
    claim_times: ClaimTimes,
}

impl JobContext {
    pub(crate) fn new(
        job: ClaimedJob,
        worker: Arc<Worker>,
        registry: Registry,
        cancel: CancellationToken,
        claim_times: ClaimTimes,
    ) -> JobContext {
        JobContext {
            job,
            worker,
            registry,
            cancel,
            claim_times,
        }
    }

    /// When this attempt's claim was made, as far as anything asked (see [`ClaimTimes`]).
    pub(crate) fn claim_times(&self) -> ClaimTimes {
        self.claim_times
    }

    /// The job: id, kind, attempt and claim time (the fencing token), queue, priority,
    /// group, payload.
    pub fn job(&self) -> &ClaimedJob {
        &self.job
    }

    /// Cancelled when the job is cancelled, its lease is lost, the worker stops, or the
    /// attempt ran past its time limit. Long waits should end when it is.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves once [`JobContext::cancellation`] is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// How long a lease lasts without a heartbeat: the time another worker waits before
    /// it takes over a job whose worker died.
    pub fn lease(&self) -> Duration {
        self.worker.config.lease
    }

    /// The worker's metrics (for timing calls to outside systems).
    pub fn metrics(&self) -> &Metrics {
        &self.worker.metrics
    }

    /// The shared value of type `T` that the registry was given
    /// ([`Registry::with_state`]); a fatal error when there is none, since the worker
    /// was put together without it.
    pub fn state<T: Any + Send + Sync>(&self) -> Result<&T, JobError> {
        self.registry.state::<T>().ok_or_else(|| {
            JobError::fatal(format!(
                "this worker was started without the {} that {} jobs need",
                std::any::type_name::<T>(),
                self.job.kind
            ))
        })
    }

    /// Adds a line to the job's history (fenced by the attempt). Failing to log never
    /// fails the job.
    pub async fn log(&self, message: &str) {
        if let Err(err) = self
            .worker
            .store
            .append_log(&self.job.claim(), self.worker.id, message)
            .await
        {
            tracing::warn!(error = %error_chain(&err), "could not append to the job's history");
        }
    }

    /// Records this attempt's effect once (in `job_effects`); `false` when the attempt
    /// no longer holds the job (its lease was taken over, or it was cancelled), and
    /// then its result will be refused anyway.
    pub async fn record_effect(&self) -> Result<bool, JobError> {
        self.worker
            .store
            .record_effect(&self.job.claim(), self.worker.id)
            .await
            .map_err(|err| JobError::retryable_from("could not record the effect", err))
    }

    /// Sends the hints of jobs that this handler enqueued in a transaction it
    /// committed, so they start at once (best effort: the sweeper dispatches whatever
    /// is left).
    pub async fn notify(&self, enqueued: &[Enqueued]) {
        self.worker.dispatch.committed(enqueued).await;
    }

    /// Parses the payload; a payload that does not parse is a fatal error.
    pub(crate) fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.job.payload.clone())
            .map_err(|err| JobError::fatal_from(format!("invalid {} payload", self.job.kind), err))
    }
}
