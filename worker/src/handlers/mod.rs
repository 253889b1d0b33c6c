//! What each job kind does. A kind is a [`JobType`] (shared with producers) that also
//! implements [`Handler`]: given a [`JobContext`] and its payload, it returns `Ok(())` or
//! a [`JobError`] that says whether trying again can help. A [`Registry`] holds the
//! handlers a worker runs; the built-in kinds are registered like any other.

mod deployments;
mod testing;

use std::error::Error as StdError;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use lc_shared::builtin;
use lc_shared::deployment::kinds as deployment_kinds;
use lc_shared::kind::{JobType, KindError, KindInfo, Kinds};
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

/// What a worker does with jobs of a kind.
pub trait Handler: JobType {
    /// Runs one attempt. The payload was checked at enqueue; a payload that does not
    /// parse any more (an older producer) fails the job as fatal before this is called.
    fn run(
        context: &JobContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}

type RunFn = for<'a> fn(&'a JobContext) -> BoxFuture<'a, Result<(), JobError>>;

/// Parses the payload and runs `H`. Boxed: some handlers' futures are large (many awaits
/// on docker-machine and the database), and a job's task should not carry them inline.
fn run_erased<H: Handler>(context: &JobContext) -> BoxFuture<'_, Result<(), JobError>> {
    Box::pin(async move {
        let payload = context.payload::<H::Payload>()?;
        H::run(context, payload).await
    })
}

/// The kinds a worker runs: each kind's [`KindInfo`] (for the inbox, time limits) and
/// its handler. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    kinds: Kinds,
    handlers: Arc<BTreeMap<&'static str, RunFn>>,
}

impl Registry {
    /// The built-in kinds: `noop`, `sleep` and the deployment kinds.
    pub fn builtin() -> Result<Registry, KindError> {
        Registry::default()
            .with::<builtin::Noop>()?
            .with::<builtin::Sleep>()?
            .with::<deployment_kinds::Provision>()?
            .with::<deployment_kinds::ProvisionMachine>()?
            .with::<deployment_kinds::Deploy>()?
            .with::<deployment_kinds::Teardown>()
    }

    /// This registry plus `H`.
    pub fn with<H: Handler>(self) -> Result<Registry, KindError> {
        let kinds = self.kinds.with_info(KindInfo::of::<H>())?;
        let mut handlers = (*self.handlers).clone();
        handlers.insert(H::KIND.as_str(), run_erased::<H> as RunFn);
        Ok(Registry {
            kinds,
            handlers: Arc::new(handlers),
        })
    }

    /// The kinds, as producers and the inbox ingester check them.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// The built-in time limit of a kind.
    pub fn timeout(&self, kind: &str) -> Option<Duration> {
        self.kinds.get(kind).map(|info| info.timeout)
    }

    /// Runs the handler of the job's kind.
    pub async fn run(&self, context: &JobContext) -> Result<(), JobError> {
        crate::metrics::handler_started(context.job.id);
        let Some(run) = self.handlers.get(context.job.kind.as_str()) else {
            return Err(JobError::fatal(format!(
                "this worker cannot run jobs of kind {:?} (it runs: {})",
                context.job.kind,
                self.kinds.names().join(", ")
            )));
        };
        run(context).await
    }
}
