//! The deployment domain's worker side: handlers of the `provision`,
//! `provision_machine`, `deploy` and `teardown` kinds (docker-machine and the Docker
//! Engine API), put on the queue core's worker runtime (`lc-worker`) through its public
//! API only, the way a library user's own kinds are. The `lc-worker` binary of this
//! crate runs every built-in kind ([`lc_deployment::kinds::Builtin`]).
//!
//! - [`registry`]: the one list of built-in kinds, with their handlers and the
//!   [`DeploymentWorker`] state they share
//! - `handlers`: what each deployment kind does
//! - `machine`: the docker-machine driver (timeouts, process groups, no crash reports)
//! - `machine_store`: docker-machine stores made per step from the database
//! - `tls`: a deployment's CA and client certificate
//! - `process`: signals to processes and process groups
//! - `docker`: the Docker Engine API client (bollard) for one machine's engine
//! - [`webhook`]: signed webhook requests (Standard Webhooks 1.0)
//! - [`config`]: the deployment handlers' flags ([`MachineConfig`])
//! - [`cli`]: the `lc-worker` command ([`cli::main_with`])

pub mod cli;
pub mod config;
mod docker;
mod handlers;
mod machine;
pub mod machine_store;
mod process;
mod tls;
pub mod webhook;

pub use config::MachineConfig;
pub use handlers::PARALLEL_MACHINES;

use lc_deployment::DeploymentStore;
use lc_deployment::events::DeploymentEvents;
use lc_deployment::kinds::Builtin;
use lc_shared::secrets::{SecretError, SecretKey};
use lc_shared::store::Store;
use lc_worker::Registry;

/// The domain of the deployment handlers: `Handler<Deployments>` is implemented here
/// for the kinds that `lc-deployment` defines (see `lc_worker::Handler`).
pub struct Deployments;

/// What the deployment handlers share: the deployment tables, their settings, and the
/// key that seals docker-machine state.
pub struct DeploymentWorker {
    pub store: DeploymentStore,
    pub config: MachineConfig,
    /// Seals and opens docker-machine state (`LC_SECRET_KEY`); `None` when not set, and
    /// then docker-machine jobs fail with an error that says so.
    pub secret_key: Option<SecretKey>,
    /// Sends webhook requests.
    pub webhooks: webhook::WebhookClient,
}

impl DeploymentWorker {
    /// The handlers' state on `store`, with `LC_SECRET_KEY` read from the environment.
    /// Removes the scratch stores that killed workers left in `config.machines_dir`.
    pub fn new(store: Store, config: MachineConfig) -> Result<DeploymentWorker, SecretError> {
        let secret_key = SecretKey::from_env()?;
        let stale = machine_store::remove_stale(&config.machines_dir);
        if stale > 0 {
            tracing::info!(removed = stale, dir = %config.machines_dir.display(),
                           "removed scratch stores left by killed workers");
        }
        Ok(DeploymentWorker {
            store: DeploymentStore::new(store),
            config,
            secret_key,
            webhooks: webhook::WebhookClient::new(),
        })
    }
}

/// Every built-in kind ([`Builtin`]: the core's and the deployment kinds) with its
/// handler, the deployment handlers' state, and the deployments' changes as events
/// ([`DeploymentEvents`], beside the jobs' own that every worker's relay publishes).
pub fn registry(state: DeploymentWorker) -> Result<Registry, lc_shared::kind::KindError> {
    let events = DeploymentEvents::new(state.store.jobs().clone());
    Ok(Registry::default()
        .with_list_in::<Deployments, Builtin>()?
        .with_event_source(events)
        .with_state(state))
}
