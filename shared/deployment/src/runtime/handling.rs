//! What the deployment handlers (`crate::kinds`) share: their state, the origin of the
//! jobs they enqueue, dispatching those jobs after commit, the `local` provider's
//! engine, how errors of the store, docker-machine and the Docker Engine API fail a job,
//! and waiting that a cancel cuts short.

use std::time::Duration;

use lc_shared::store::{Enqueued, StoreError};
use lc_worker::{JobContext, JobError, Metrics};

use super::DeploymentWorker;
use super::config::MachineConfig;
use super::docker::{DEFAULT_LOCAL_ENGINE, DockerError};
use super::machine::{CallContext, MachineError};
use super::machine_store::ScratchStore;
use crate::{Endpoint, Origin};

/// The deployment worker's shared state (store, settings, key), as the registry holds
/// it.
pub(crate) fn env(ctx: &JobContext) -> Result<&DeploymentWorker, JobError> {
    ctx.state::<DeploymentWorker>()
}

/// Where the jobs a handler enqueues go: its own queue and priority.
pub(crate) fn origin(ctx: &JobContext) -> Origin {
    let job = ctx.job();
    Origin::new(Some(job.id), job.queue.clone(), job.priority)
}

/// A failed store call fails the job as retryable (the database may answer next time),
/// with its cause.
pub(crate) fn store_error(what: &str, err: StoreError) -> JobError {
    JobError::retryable_from(format!("could not {what}"), err)
}

/// A failed Docker Engine call: fatal when a retry cannot help (the engine refused the
/// request for good), retryable otherwise, with its cause.
pub(crate) fn docker_error(what: String, err: DockerError) -> JobError {
    if err.is_permanent() {
        JobError::fatal_from(what, err)
    } else {
        JobError::retryable_from(what, err)
    }
}

/// Whether this failure ends the job: fatal, or its last attempt.
pub(crate) fn is_final(ctx: &JobContext, err: &JobError) -> bool {
    match err {
        JobError::Fatal { .. } => true,
        JobError::Retryable { .. } => ctx.job().attempt >= ctx.job().max_attempts,
        JobError::Cancelled => false,
    }
}

/// Sends hints for jobs enqueued in a committed transaction (best effort: the sweeper
/// dispatches whatever is left).
pub(crate) async fn dispatch(ctx: &JobContext, enqueued: &[Enqueued]) {
    ctx.notify(enqueued).await;
}

/// The `local` provider's "machine": this worker's own Docker engine.
pub(crate) fn local_endpoint(config: &MachineConfig) -> Endpoint {
    let url = config
        .docker_host
        .clone()
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| DEFAULT_LOCAL_ENGINE.to_owned());
    let cert_dir = std::env::var("DOCKER_CERT_PATH")
        .ok()
        .filter(|dir| !dir.is_empty());
    let cert = |file: &str| cert_dir.as_ref().map(|dir| format!("{dir}/{file}"));
    Endpoint {
        url,
        ip_address: Some("127.0.0.1".to_owned()),
        driver: Some("local".to_owned()),
        ca_cert_path: cert("ca.pem"),
        client_cert_path: cert("cert.pem"),
        client_key_path: cert("key.pem"),
    }
}

/// docker-machine calls made by a job: stopped when the job is cancelled, timed into
/// the worker's metrics, their output written to the job's history.
impl CallContext for JobContext {
    fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send {
        JobContext::cancelled(self)
    }

    fn metrics(&self) -> &Metrics {
        JobContext::metrics(self)
    }

    fn log(&self, line: &str) -> impl std::future::Future<Output = ()> + Send {
        JobContext::log(self, line)
    }
}

/// How a failed docker-machine call fails the job: cancelled stays cancelled, usage and
/// configuration errors are fatal, the rest may pass on a retry.
pub(crate) trait IntoJobError {
    fn into_job_error(self, what: &str) -> JobError;
}

impl IntoJobError for MachineError {
    fn into_job_error(self, what: &str) -> JobError {
        match self {
            MachineError::Cancelled { .. } => JobError::Cancelled,
            err if err.is_permanent() => JobError::fatal_from(what.to_owned(), err),
            err => JobError::retryable_from(what.to_owned(), err),
        }
    }
}

/// A `tcp://` endpoint of a docker-machine machine with the deployment's certificates
/// (written for this step) as its TLS files.
pub(crate) fn with_certificates(endpoint: Endpoint, certs: Option<&ScratchStore>) -> Endpoint {
    match certs {
        Some(certs) if endpoint.url.starts_with("tcp://") => Endpoint {
            ca_cert_path: Some(certs.ca_cert().display().to_string()),
            client_cert_path: Some(certs.client_cert().display().to_string()),
            client_key_path: Some(certs.client_key().display().to_string()),
            ..endpoint
        },
        _ => endpoint,
    }
}

/// Waits, unless the job is cancelled first.
pub(crate) async fn pause(ctx: &JobContext, duration: Duration) -> Result<(), JobError> {
    tokio::select! {
        _ = ctx.cancelled() => Err(JobError::Cancelled),
        _ = tokio::time::sleep(duration) => Ok(()),
    }
}
