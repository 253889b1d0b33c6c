//! What the deployment kinds' handlers (`crate::kinds`, feature `worker`) run on, put
//! on the queue core's worker runtime (`lc-worker`) through its public API only, the
//! way a library user's own kinds are:
//!
//! - [`DeploymentWorker`]: the state the handlers share (registered by
//!   [`crate::kinds::registry`])
//! - `handling` and `session`: what the handlers share: error mapping, the jobs they
//!   enqueue, docker-machine for one step of a job
//! - `machine`: the docker-machine driver (timeouts, process groups, no crash reports)
//! - [`machine_store`]: docker-machine stores made per step from the database
//! - `tls`: a deployment's CA and client certificate
//! - `process`: signals to processes and process groups
//! - `docker`: the Docker Engine API client (bollard) for one machine's engine
//! - [`webhook`]: signed webhook requests (Standard Webhooks 1.0)
//! - [`config`]: the deployment handlers' flags ([`MachineConfig`])

pub mod config;
pub(crate) mod docker;
pub(crate) mod handling;
pub(crate) mod machine;
pub mod machine_store;
mod process;
pub(crate) mod session;
pub(crate) mod tls;
pub mod webhook;

pub use config::MachineConfig;
/// Public for the bench's fleet floor, which gives its docker-machine creates
/// certificates the way the provision step does.
pub use tls::{DeploymentTls, TlsError};

use crate::DeploymentStore;
use lc_shared::secrets::{SecretError, SecretKey};
use lc_shared::store::Store;

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
