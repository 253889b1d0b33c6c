//! What each job kind does. A handler gets a [`JobContext`] and returns `Ok(())` or a
//! [`JobError`] that says whether trying again can help.

mod deployments;
mod testing;

use std::error::Error as StdError;
use std::sync::Arc;

use lc_shared::JobKind;
use lc_shared::state::RunResult;
use lc_shared::store::{ClaimedJob, error_chain};
use tokio_util::sync::CancellationToken;

use crate::worker::Worker;

/// A boxed error source, kept so logs and job rows show the whole chain.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Trying again may work (a daemon hiccup, a timeout, a lost connection).
    #[error("{message}")]
    Retryable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Trying again will fail the same way (invalid payload, missing image).
    #[error("{message}")]
    Fatal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The handler stopped because its token was cancelled.
    #[error("stopped: job cancelled, lease lost or worker shutting down")]
    Cancelled,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> JobError {
        JobError::Retryable {
            message: message.into(),
            source: None,
        }
    }

    pub fn fatal(message: impl Into<String>) -> JobError {
        JobError::Fatal {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps a cause as retryable, keeping it as the source.
    pub fn retryable_from(message: impl Into<String>, source: impl Into<BoxError>) -> JobError {
        JobError::Retryable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn fatal_from(message: impl Into<String>, source: impl Into<BoxError>) -> JobError {
        JobError::Fatal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn into_run_result(self) -> RunResult {
        let text = error_chain(&self);
        match self {
            JobError::Retryable { .. } | JobError::Cancelled => RunResult::Retryable(text),
            JobError::Fatal { .. } => RunResult::Fatal(text),
        }
    }
}

/// What a handler may use.
pub struct JobContext {
    pub job: ClaimedJob,
    pub worker: Arc<Worker>,
    /// Cancelled when the job is cancelled, its lease is lost, or the worker stops.
    pub cancel: CancellationToken,
}

impl JobContext {
    /// Adds a line to the job's history (fenced by the attempt). Failing to log never
    /// fails the job.
    pub async fn log(&self, message: &str) {
        if let Err(err) = self
            .worker
            .store
            .append_log(self.job.id, self.job.attempt, self.worker.id, message)
            .await
        {
            tracing::warn!(error = %error_chain(&err), "could not append to the job's history");
        }
    }

    /// Parses the payload; a payload that does not parse is a fatal error.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.job.payload.clone())
            .map_err(|err| JobError::fatal_from(format!("invalid {} payload", self.job.kind), err))
    }
}

/// Runs the handler of the job's kind.
pub async fn run(context: &JobContext) -> Result<(), JobError> {
    crate::metrics::handler_started(context.job.id);
    let kind: JobKind = context
        .job
        .kind
        .parse()
        .map_err(|err| JobError::fatal_from("this worker cannot run the job", err))?;
    match kind {
        JobKind::Noop => testing::noop(context).await,
        JobKind::Sleep => testing::sleep(context).await,
        // Boxed: these futures are large (many awaits on docker-machine and the
        // database), and a job's task should not carry them on its stack.
        JobKind::Provision => Box::pin(deployments::provision(context)).await,
        JobKind::ProvisionMachine => Box::pin(deployments::provision_machine(context)).await,
        JobKind::Deploy => Box::pin(deployments::deploy(context)).await,
        JobKind::Teardown => Box::pin(deployments::teardown(context)).await,
    }
}
