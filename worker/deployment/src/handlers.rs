//! The deployment jobs: `provision` (fan-out and watchdog), `provision_machine`,
//! `deploy`, `teardown`, `webhook` (one delivery of a change to the deployment's
//! webhook), and `health_check` (a deployed deployment's machines and containers
//! checked, and repaired as its spec says). What they share: the origin of the jobs they enqueue,
//! dispatching those jobs after commit, the `local` provider's engine, and error
//! mapping.
//!
//! How they stay apart (details in each file):
//! - every change to a deployment's fate locks its row first, in one transaction with
//!   the jobs it implies (see `lc_shared::deployment`'s store);
//! - teardown moves the deployment to `tearing_down` first, which stops the fan-out,
//!   `provision_machine` (before and after its create) and `deploy` (before each
//!   machine) from making anything new; then it cancels their queued jobs and waits for
//!   running ones, so nothing is created behind its back; then it removes containers,
//!   machines, and whatever else the deployment's docker-machine store lists.

mod deploy;
mod health;
mod provision;
mod session;
mod teardown;
mod webhook;

pub use deploy::PARALLEL_MACHINES;

use std::time::Duration;

use lc_deployment::kinds::{Deploy, HealthCheck, Provision, ProvisionMachine, Teardown, Webhook};
use lc_deployment::{
    DeployPayload, Endpoint, HealthCheckPayload, Origin, ProvisionMachinePayload, ProvisionPayload,
    TeardownPayload, WebhookPayload,
};
use lc_shared::store::{Enqueued, StoreError};
use lc_worker::{Handler, JobContext, JobError, Metrics};

use crate::config::MachineConfig;
use crate::docker::{DEFAULT_LOCAL_ENGINE, DockerError};
use crate::machine::{CallContext, MachineError};
use crate::machine_store::ScratchStore;
use crate::{DeploymentWorker, Deployments};

impl Handler<Deployments> for Provision {
    async fn run(ctx: &JobContext, payload: ProvisionPayload) -> Result<(), JobError> {
        provision::provision(ctx, payload).await
    }
}

impl Handler<Deployments> for ProvisionMachine {
    async fn run(ctx: &JobContext, payload: ProvisionMachinePayload) -> Result<(), JobError> {
        provision::provision_machine(ctx, payload).await
    }
}

impl Handler<Deployments> for Deploy {
    async fn run(ctx: &JobContext, payload: DeployPayload) -> Result<(), JobError> {
        deploy::deploy(ctx, payload).await
    }
}

impl Handler<Deployments> for Teardown {
    async fn run(ctx: &JobContext, payload: TeardownPayload) -> Result<(), JobError> {
        teardown::teardown(ctx, payload).await
    }
}

impl Handler<Deployments> for Webhook {
    async fn run(ctx: &JobContext, payload: WebhookPayload) -> Result<(), JobError> {
        webhook::webhook(ctx, payload).await
    }
}

impl Handler<Deployments> for HealthCheck {
    async fn run(ctx: &JobContext, payload: HealthCheckPayload) -> Result<(), JobError> {
        health::health_check(ctx, payload).await
    }
}

/// The deployment worker's shared state (store, settings, key), as the registry holds
/// it.
fn env(ctx: &JobContext) -> Result<&DeploymentWorker, JobError> {
    ctx.state::<DeploymentWorker>()
}

/// Where the jobs a handler enqueues go: its own queue and priority.
fn origin(ctx: &JobContext) -> Origin {
    let job = ctx.job();
    Origin::new(Some(job.id), job.queue.clone(), job.priority)
}

fn store_error(what: &str, err: StoreError) -> JobError {
    JobError::retryable_from(format!("could not {what}"), err)
}

fn docker_error(what: String, err: DockerError) -> JobError {
    if err.is_permanent() {
        JobError::fatal_from(what, err)
    } else {
        JobError::retryable_from(what, err)
    }
}

/// Whether this failure ends the job: fatal, or its last attempt.
fn is_final(ctx: &JobContext, err: &JobError) -> bool {
    match err {
        JobError::Fatal { .. } => true,
        JobError::Retryable { .. } => ctx.job().attempt >= ctx.job().max_attempts,
        JobError::Cancelled => false,
    }
}

/// Sends hints for jobs enqueued in a committed transaction (best effort: the sweeper
/// dispatches whatever is left).
async fn dispatch(ctx: &JobContext, enqueued: &[Enqueued]) {
    ctx.notify(enqueued).await;
}

/// The `local` provider's "machine": this worker's own Docker engine.
fn local_endpoint(config: &MachineConfig) -> Endpoint {
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
trait IntoJobError {
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
fn with_certificates(endpoint: Endpoint, certs: Option<&ScratchStore>) -> Endpoint {
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
async fn pause(ctx: &JobContext, duration: Duration) -> Result<(), JobError> {
    tokio::select! {
        _ = ctx.cancelled() => Err(JobError::Cancelled),
        _ = tokio::time::sleep(duration) => Ok(()),
    }
}
