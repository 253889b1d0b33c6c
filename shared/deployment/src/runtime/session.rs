//! docker-machine for one step of a deployment job: the deployment's certificates and
//! the machines' entries, read from the database and opened with `LC_SECRET_KEY`, in a
//! scratch store made for this step; what the calls change is sealed and written back,
//! fenced by the job's attempt.

use lc_shared::secrets::{SecretError, SecretKey};
use lc_worker::{JobContext, JobError};
use uuid::Uuid;

use super::handling::{IntoJobError, env, store_error};
use super::machine::MachineCli;
use super::machine_store::{MachineEntry, ScratchStore};
use super::tls::{DeploymentTls, pem_from_env};
use crate::{Fence, MachineRow, Provider, Spec};

/// What the database holds of a machine's docker-machine state.
#[derive(Debug)]
pub enum Loaded {
    /// Nothing was recorded: docker-machine never saved the machine.
    Nothing,
    /// The entry is in the scratch store (complete or not: docker-machine tells).
    Entry,
    /// Something was recorded but cannot be opened (another key, corrupt): like a
    /// broken entry, never "does not exist".
    Unreadable(String),
}

pub struct MachineSession {
    pub cli: MachineCli,
    pub store: ScratchStore,
    key: SecretKey,
}

/// The worker's secret key, or the fatal error that says how to set one.
pub fn secret_key(ctx: &JobContext) -> Result<SecretKey, JobError> {
    env(ctx)?.secret_key.clone().ok_or_else(|| {
        JobError::fatal_from("cannot use docker-machine state", SecretError::Missing)
    })
}

/// The attempt this job runs as.
pub fn fence(ctx: &JobContext) -> Fence {
    Fence {
        job_id: ctx.job().id,
        attempt: ctx.job().attempt,
    }
}

/// The deployment's certificates: made now (or read from the operator's CA) and
/// stored, unless an earlier attempt stored some; then those are used.
pub async fn ensure_tls(
    ctx: &JobContext,
    deployment_id: Uuid,
    deployment_name: &str,
    spec: &Spec,
) -> Result<DeploymentTls, JobError> {
    let key = secret_key(ctx)?;
    if let Some(tls) = read_tls(ctx, &key, deployment_id).await? {
        return Ok(tls);
    }
    let tls = match &spec.provider {
        Provider::DockerMachine {
            ca_env: Some(ca), ..
        } => {
            let cert = pem_from_env(&ca.cert)
                .map_err(|err| JobError::fatal_from("provider.ca_env", err))?;
            let ca_key = pem_from_env(&ca.key)
                .map_err(|err| JobError::fatal_from("provider.ca_env", err))?;
            DeploymentTls::from_ca(deployment_name, &cert, &ca_key)
                .map_err(|err| JobError::fatal_from("provider.ca_env", err))?
        }
        _ => DeploymentTls::generate(deployment_name)
            .map_err(|err| JobError::retryable_from("cannot make certificates", err))?,
    };
    let stored = env(ctx)?
        .store
        .store_deployment_tls(deployment_id, &tls.ca_cert, &tls.seal(&key, deployment_id))
        .await
        .map_err(|err| store_error("store the deployment's certificates", err))?;
    if stored {
        ctx.log("made the deployment's CA and client certificate (the CA key is stored sealed)")
            .await;
        return Ok(tls);
    }
    // Another attempt stored its own first: use those.
    read_tls(ctx, &key, deployment_id)
        .await?
        .ok_or_else(|| JobError::retryable("the deployment's certificates vanished"))
}

async fn read_tls(
    ctx: &JobContext,
    key: &SecretKey,
    deployment_id: Uuid,
) -> Result<Option<DeploymentTls>, JobError> {
    let Some((ca_cert, sealed)) = env(ctx)?
        .store
        .deployment_tls(deployment_id)
        .await
        .map_err(|err| store_error("read the deployment's certificates", err))?
    else {
        return Ok(None);
    };
    DeploymentTls::open(key, deployment_id, &ca_cert, &sealed)
        .map(Some)
        .map_err(|err| JobError::fatal_from("cannot open the deployment's certificates", err))
}

/// The deployment's certificates as files, for the Docker client of `tcp://` engines.
pub async fn certificate_files(
    ctx: &JobContext,
    deployment_id: Uuid,
) -> Result<Option<ScratchStore>, JobError> {
    let key = secret_key(ctx)?;
    let Some(tls) = read_tls(ctx, &key, deployment_id).await? else {
        return Ok(None);
    };
    ScratchStore::create(&env(ctx)?.config.machines_dir, &tls)
        .map(Some)
        .map_err(|err| JobError::retryable_from("cannot write the certificates", err))
}

impl MachineSession {
    /// A scratch store with the deployment's certificates. A teardown of a deployment
    /// that never got certificates (nothing was created) uses throwaway ones.
    pub async fn open(
        ctx: &JobContext,
        deployment_id: Uuid,
        deployment_name: &str,
        spec: &Spec,
        require_credentials: bool,
    ) -> Result<MachineSession, JobError> {
        let key = secret_key(ctx)?;
        let tls = match read_tls(ctx, &key, deployment_id).await? {
            Some(tls) => tls,
            None if !require_credentials => DeploymentTls::generate(deployment_name)
                .map_err(|err| JobError::retryable_from("cannot make certificates", err))?,
            None => ensure_tls(ctx, deployment_id, deployment_name, spec).await?,
        };
        let store = ScratchStore::create(&env(ctx)?.config.machines_dir, &tls).map_err(|err| {
            JobError::retryable_from("cannot prepare a docker-machine store", err)
        })?;
        let cli = MachineCli::new(&env(ctx)?.config, spec, require_credentials, &store)
            .map_err(|err| err.into_job_error("cannot run docker-machine"))?;
        Ok(MachineSession { cli, store, key })
    }

    /// Puts the machine's recorded entry into the scratch store.
    pub async fn load(&self, ctx: &JobContext, machine: &MachineRow) -> Result<Loaded, JobError> {
        let Some(sealed) = env(ctx)?
            .store
            .machine_entry(machine.id)
            .await
            .map_err(|err| store_error("read the machine's docker-machine state", err))?
        else {
            return Ok(Loaded::Nothing);
        };
        let entry = match MachineEntry::open(&self.key, machine.id, &sealed) {
            Ok(entry) => entry,
            Err(err) => return Ok(Loaded::Unreadable(err.to_string())),
        };
        self.store.put(&machine.name, &entry).map_err(|err| {
            JobError::retryable_from("cannot write the machine's store entry", err)
        })?;
        Ok(Loaded::Entry)
    }

    /// The machine's entry as it is now, sealed for its row (`None`: no entry).
    pub fn sealed_entry(&self, machine: &MachineRow) -> Result<Option<Vec<u8>>, JobError> {
        let entry = self.store.take(&machine.name).map_err(|err| {
            JobError::retryable_from("cannot read the machine's store entry", err)
        })?;
        Ok(entry.map(|entry| entry.seal(&self.key, machine.id)))
    }

    /// Writes the machine's entry back (fenced); false when this attempt lost its job.
    pub async fn save(&self, ctx: &JobContext, machine: &MachineRow) -> Result<bool, JobError> {
        let sealed = self.sealed_entry(machine)?;
        env(ctx)?
            .store
            .save_machine_entry(machine.id, fence(ctx), sealed.as_deref())
            .await
            .map_err(|err| store_error("save the machine's docker-machine state", err))
    }
}
