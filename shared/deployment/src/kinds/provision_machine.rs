//! `provision_machine` creates one machine idempotently: a machine the store already
//! holds in `Running` state is adopted; a half-made one (a failed or interrupted create)
//! is removed first; a create still running from an earlier attempt whose worker died
//! is waited for. It then reads `inspect` and `url`, and records the endpoint in the
//! transaction that also does the join (the last ready machine makes the deployment
//! `provisioned` and, when asked, enqueues `deploy`). If teardown started meanwhile,
//! that transaction refuses and the job removes the machine it made.
//!
//! A machine that fails for good (a fatal error, or a retryable one on the last
//! attempt) fails the deployment and enqueues the rollback teardown, in one
//! transaction. A job that dies without running that code (its lease expired on its
//! last attempt, or an operator cancelled it) is caught by `provision`'s watchdog.
//!
//! With `repair` (a health check found the machine gone at the provider), what is left
//! of the old machine is removed first, and the join enqueues a `deploy` of the current
//! generation.

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::{MAX_NODES, ProvisionMachinePayload};

/// Creates one machine. Each docker-machine call has its own limit (--machine-timeout,
/// 10m); a machine takes a create plus a few short calls, maybe after a removal.
pub struct ProvisionMachine;

impl JobType for ProvisionMachine {
    const KIND: JobKind = JobKind::named("provision_machine");
    type Payload = ProvisionMachinePayload;
    const TIMEOUT: Duration = Duration::from_secs(45 * MINUTE);
    fn check(payload: &ProvisionMachinePayload) -> Result<(), String> {
        if !(1..=MAX_NODES).contains(&payload.node) {
            return Err(format!("node must be between 1 and {MAX_NODES}"));
        }
        Ok(())
    }
}

impl KindPayload for ProvisionMachinePayload {
    type Kind = ProvisionMachine;
}

#[cfg(feature = "worker")]
pub(super) mod handler {
    use std::time::{Duration, Instant};

    use crate::{
        Endpoint, MachineRow, MachineStart, Provider, ProvisionMachinePayload, ReadyOutcome, Spec,
    };
    use lc_shared::store::error_chain;

    use super::ProvisionMachine;
    use crate::runtime::docker::Engine;
    use crate::runtime::handling::IntoJobError;
    use crate::runtime::handling::{
        dispatch, docker_error, env, is_final, local_endpoint, origin, pause, store_error,
    };
    use crate::runtime::machine::MachineCli;
    use crate::runtime::session::{Loaded, MachineSession, fence};
    use lc_worker::{Handler, JobContext, JobError};

    /// What a worker does with a `provision_machine` job (see the file's doc).
    impl Handler for ProvisionMachine {
        async fn run(ctx: &JobContext, payload: ProvisionMachinePayload) -> Result<(), JobError> {
            let store = &env(ctx)?.store;
            let start = store
                .begin_machine(
                    payload.deployment_id,
                    payload.node,
                    ctx.job().id,
                    payload.repair.is_some(),
                )
                .await
                .map_err(|err| store_error("start the machine", err))?;
            match start {
                MachineStart::NotFound => Err(JobError::fatal(format!(
                    "deployment {} has no node {}",
                    payload.deployment_id, payload.node
                ))),
                MachineStart::AlreadyReady(machine) => {
                    ctx.log(&format!(
                        "machine {} is ready already (an earlier attempt finished it)",
                        machine.name
                    ))
                    .await;
                    Ok(())
                }
                MachineStart::Stop {
                    state,
                    machine,
                    spec,
                } => {
                    ctx.log(&format!("deployment is {state}: not creating anything"))
                        .await;
                    if let Some(machine) = machine {
                        remove_leftover(ctx, &machine, &spec).await;
                    }
                    Ok(())
                }
                MachineStart::Create { machine, spec, .. } => {
                    match create_and_record(ctx, &machine, &spec, payload.repair).await {
                        Ok(()) => Ok(()),
                        Err(JobError::Cancelled) => Err(JobError::Cancelled),
                        Err(err) => {
                            let text = error_chain(&err);
                            if is_final(ctx, &err) {
                                match store
                                    .machine_failed(
                                        payload.deployment_id,
                                        machine.id,
                                        &text,
                                        &origin(ctx),
                                        payload.repair.is_some(),
                                    )
                                    .await
                                {
                                    Ok(Some(teardown)) => {
                                        ctx.log(&format!("machine failed for good: deployment failed, rollback teardown {}", teardown.id))
                                    .await;
                                        dispatch(ctx, &[teardown]).await;
                                    }
                                    Ok(None) => {}
                                    Err(store_err) => {
                                        // The watchdog sees this job dead and rolls back instead.
                                        ctx.log(&format!(
                                            "could not record the failure ({}); the watchdog will",
                                            error_chain(&store_err)
                                        ))
                                        .await;
                                    }
                                }
                            } else if let Err(store_err) =
                                store.machine_error(machine.id, &text).await
                            {
                                tracing::warn!(error = %error_chain(&store_err), "could not note the machine's error");
                            }
                            Err(err)
                        }
                    }
                }
            }
        }
    }

    /// Creates (or adopts) the machine, then records it ready; if the deployment stopped
    /// provisioning in between, removes it again. A `repair` (the health check that found
    /// the machine gone) removes what is left of the old machine first.
    async fn create_and_record(
        ctx: &JobContext,
        machine: &MachineRow,
        spec: &Spec,
        repair: Option<uuid::Uuid>,
    ) -> Result<(), JobError> {
        let mut entry = None;
        let endpoint = match &spec.provider {
            Provider::Local {} => {
                let endpoint = local_endpoint(&env(ctx)?.config);
                Engine::connect(&endpoint, ctx.metrics())
                    .await
                    .map_err(|err| {
                        docker_error(format!("local engine for machine {}", machine.name), err)
                    })?;
                ctx.log(&format!(
                    "machine {} is the local engine {}",
                    machine.name, endpoint.url
                ))
                .await;
                endpoint
            }
            Provider::DockerMachine { driver, .. } => {
                let session = MachineSession::open(
                    ctx,
                    machine.deployment_id,
                    &deployment_name(machine),
                    spec,
                    true,
                )
                .await?;
                if repair.is_some() {
                    remove_gone(ctx, &session, machine).await?;
                }
                let endpoint =
                    create_with_docker_machine(ctx, &session, machine, spec, driver).await?;
                entry = session.sealed_entry(machine)?;
                endpoint
            }
        };
        if ctx.cancellation().is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let outcome = env(ctx)?
            .store
            .machine_ready(
                machine.deployment_id,
                machine.id,
                &endpoint,
                entry.as_deref(),
                fence(ctx),
                &origin(ctx),
                repair,
            )
            .await
            .map_err(|err| store_error("record the machine ready", err))?;
        after_ready(ctx, machine, spec, outcome).await
    }

    /// What follows the machine's ready record: the deploy the join enqueued is sent, or,
    /// when teardown started during the create, the machine just made is removed.
    async fn after_ready(
        ctx: &JobContext,
        machine: &MachineRow,
        spec: &Spec,
        outcome: ReadyOutcome,
    ) -> Result<(), JobError> {
        match outcome {
            ReadyOutcome::Waiting { ready, total } => {
                ctx.log(&format!(
                    "machine {} ready ({ready} of {total})",
                    machine.name
                ))
                .await;
            }
            ReadyOutcome::Joined { deploy } => {
                ctx.log(&format!(
                    "machine {} ready: every machine is, the deployment is provisioned",
                    machine.name
                ))
                .await;
                if let Some(deploy) = deploy {
                    dispatch(ctx, &[deploy]).await;
                }
            }
            ReadyOutcome::NotProvisioning(state) => {
                ctx.log(&format!(
                    "deployment became {state} during the create: removing machine {}",
                    machine.name
                ))
                .await;
                if let Provider::DockerMachine { .. } = spec.provider {
                    // The teardown waits for this job, then removes what the entry says.
                    let session = MachineSession::open(
                        ctx,
                        machine.deployment_id,
                        &deployment_name(machine),
                        spec,
                        false,
                    )
                    .await?;
                    session.load(ctx, machine).await?;
                    let removed = session.cli.rm(ctx, &machine.name).await;
                    session.save(ctx, machine).await?;
                    removed.map_err(|err| {
                        err.into_job_error("could not remove the machine made during teardown")
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Before a machine gone at the provider is created again: unless it runs (an earlier
    /// attempt of this repair made it already), `docker-machine rm` removes what is left
    /// (its store entry, and whatever the provider still has), so the create starts clean.
    async fn remove_gone(
        ctx: &JobContext,
        session: &MachineSession,
        machine: &MachineRow,
    ) -> Result<(), JobError> {
        if !matches!(session.load(ctx, machine).await?, Loaded::Entry) {
            return Ok(());
        }
        let name = &machine.name;
        if let Ok(Some(status)) = session.cli.status(ctx, name).await
            && status == "Running"
        {
            ctx.log(&format!(
                "machine {name} runs (an earlier attempt re-created it): adopting it"
            ))
            .await;
            return Ok(());
        }
        let removed = session.cli.rm(ctx, name).await;
        session.save(ctx, machine).await?;
        match removed {
            Ok(_) => {}
            Err(err) if err.does_not_exist() => {}
            Err(err) if err.broken_entry() => {
                drop_broken_entry(ctx, session, machine, err.to_string()).await?
            }
            Err(err) => {
                return Err(err.into_job_error("could not remove the machine gone at the provider"));
            }
        }
        ctx.log(&format!(
            "removed what was left of machine {name}: creating it again"
        ))
        .await;
        Ok(())
    }

    /// The deployment's name, from the machine's (`<deployment>-<n>`).
    fn deployment_name(machine: &MachineRow) -> String {
        machine
            .name
            .rsplit_once('-')
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| machine.name.clone())
    }

    /// Creates the machine, or adopts what an earlier attempt made. What to do is decided
    /// by what the recorded store entry and docker-machine say, never by assuming that an
    /// earlier attempt's create finished (a real create dies with its worker, of SIGPIPE
    /// at its next line of output): complete and running is adopted; half-made or broken
    /// is removed and created again; nothing recorded is created.
    async fn create_with_docker_machine(
        ctx: &JobContext,
        session: &MachineSession,
        machine: &MachineRow,
        spec: &Spec,
        driver: &str,
    ) -> Result<Endpoint, JobError> {
        let name = &machine.name;
        let cli = &session.cli;
        let create = match session.load(ctx, machine).await? {
            Loaded::Nothing => true,
            Loaded::Unreadable(reason) => {
                // A machine may exist behind it: making another could leak a billed one.
                return Err(JobError::fatal(format!(
                    "machine {name}: its recorded docker-machine state cannot be read ({reason}); not creating another one. Tear the deployment down: it reports the machine for a check at the provider"
                )));
            }
            Loaded::Entry => match settle(ctx, cli, name).await? {
                Settled::Status(status) if status == "Running" => {
                    ctx.log(&format!("machine {name} exists and runs: adopting it"))
                        .await;
                    false
                }
                Settled::Missing => true,
                Settled::Status(status) => {
                    ctx.log(&format!(
                        "machine {name} is half made (status {status}): removing it before creating"
                    ))
                    .await;
                    let removed = cli.rm(ctx, name).await;
                    session.save(ctx, machine).await?;
                    match removed {
                        Err(err) if err.broken_entry() => {
                            drop_broken_entry(ctx, session, machine, err.to_string()).await?
                        }
                        other => {
                            other.map_err(|err| {
                                err.into_job_error("could not remove a half-made machine")
                            })?;
                        }
                    }
                    true
                }
                Settled::Broken(reason) => {
                    drop_broken_entry(ctx, session, machine, reason).await?;
                    true
                }
            },
        };
        if create {
            let created = create_synced(ctx, session, machine, driver, spec).await;
            if let Err(err) = created {
                if err.already_exists() {
                    return Err(JobError::retryable_from(
                        "another attempt created the machine at the same time; the next attempt adopts it",
                        err,
                    ));
                }
                if !matches!(err, crate::runtime::machine::MachineError::Cancelled { .. }) {
                    // A failed create can leave a half-made machine: remove it now, so the
                    // next attempt (or the rollback) starts clean. Best effort: the next
                    // attempt checks again from the recorded entry.
                    if let Ok(Some(_)) = cli.status(ctx, name).await
                        && cli.rm(ctx, name).await.is_ok()
                    {
                        ctx.log(&format!("removed the half-made machine {name}"))
                            .await;
                    }
                }
                session.save(ctx, machine).await?;
                return Err(err.into_job_error("docker-machine create failed"));
            }
        }
        let (info, url) = tokio::join!(cli.inspect(ctx, name), cli.url(ctx, name));
        let info = info
            .map_err(|err| err.into_job_error("docker-machine inspect failed"))?
            .ok_or_else(|| {
                JobError::retryable(format!("machine {name} vanished right after create"))
            })?;
        let url = url.map_err(|err| err.into_job_error("docker-machine url failed"))?;
        // Certificates are the deployment's (in the database), not paths in this step's
        // scratch store: deploy writes them out again wherever it runs.
        Ok(Endpoint {
            url,
            ip_address: info.ip_address,
            driver: Some(info.driver_name),
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
        })
    }

    /// How often a running create's store entry is written back, so that a worker that
    /// dies mid-create leaves what docker-machine saved so far for the next attempt (and
    /// the teardown) to find.
    const SYNC_EVERY: Duration = Duration::from_secs(1);

    async fn create_synced(
        ctx: &JobContext,
        session: &MachineSession,
        machine: &MachineRow,
        driver: &str,
        spec: &Spec,
    ) -> Result<crate::runtime::machine::CallOutput, crate::runtime::machine::MachineError> {
        let args = spec.driver_args();
        let create = session.cli.create(ctx, &machine.name, driver, &args);
        let sync = async {
            loop {
                tokio::time::sleep(SYNC_EVERY).await;
                if let Err(err) = session.save(ctx, machine).await {
                    tracing::warn!(error = %error_chain(&err), "could not save the machine's state during create");
                }
            }
        };
        tokio::select! {
            created = create => created,
            never = sync => never,
        }
    }

    /// A broken store entry (no or corrupt `config.json`) can be neither used nor removed by
    /// docker-machine: it is dropped, with a loud line naming where a resource may be left.
    async fn drop_broken_entry(
        ctx: &JobContext,
        session: &MachineSession,
        machine: &MachineRow,
        reason: String,
    ) -> Result<(), JobError> {
        session
            .store
            .remove_entry(&machine.name)
            .map_err(|err| JobError::retryable_from("cannot drop a broken store entry", err))?;
        session.save(ctx, machine).await?;
        let text = format!(
            "machine {}: its docker-machine store entry was broken ({reason}) and was dropped; a cloud resource an earlier create made may still exist: look for a machine named {} at driver {}",
            machine.name,
            machine.name,
            machine.driver.as_deref().unwrap_or("?")
        );
        tracing::warn!(machine = %machine.name, "{text}");
        ctx.log(&text).await;
        Ok(())
    }

    /// What docker-machine says of a machine once no create of it is running.
    pub(in crate::kinds) enum Settled {
        /// "does not exist"
        Missing,
        /// Its status: `Running`, `Error`, `Stopped`, ...
        Status(String),
        /// Its entry is broken: the message docker-machine gave.
        Broken(String),
    }

    /// The machine's status once no create is running on it. A machine `Starting` is being
    /// created by a call that is still alive (on this host: an earlier attempt's create
    /// that has not yet written its next line): wait for it, up to one call's time limit.
    pub(in crate::kinds) async fn settle(
        ctx: &JobContext,
        cli: &MachineCli,
        name: &str,
    ) -> Result<Settled, JobError> {
        let started = Instant::now();
        let mut said = false;
        loop {
            let status = match cli.status(ctx, name).await {
                Ok(status) => status,
                Err(err) if err.broken_entry() => return Ok(Settled::Broken(err.to_string())),
                Err(err) => return Err(err.into_job_error("docker-machine status failed")),
            };
            match status {
                Some(status) if status == "Starting" => {
                    if started.elapsed() > cli.timeout() {
                        return Err(JobError::retryable(format!(
                            "machine {name} is still being created by an earlier attempt after {:?}",
                            cli.timeout()
                        )));
                    }
                    if !said {
                        ctx.log(&format!(
                            "machine {name} is being created by an earlier attempt: waiting for it"
                        ))
                        .await;
                        said = true;
                    }
                    pause(ctx, Duration::from_millis(500)).await?;
                }
                Some(status) => return Ok(Settled::Status(status)),
                None => return Ok(Settled::Missing),
            }
        }
    }

    /// Removes a machine an earlier attempt may have made, once the deployment stopped
    /// provisioning. Best effort: the teardown removes whatever is recorded.
    async fn remove_leftover(ctx: &JobContext, machine: &MachineRow, spec: &Spec) {
        let Provider::DockerMachine { .. } = spec.provider else {
            return;
        };
        let Ok(session) = MachineSession::open(
            ctx,
            machine.deployment_id,
            &deployment_name(machine),
            spec,
            false,
        )
        .await
        else {
            return;
        };
        if !matches!(session.load(ctx, machine).await, Ok(Loaded::Entry)) {
            return;
        }
        if let Ok(Settled::Status(_)) = settle(ctx, &session.cli, &machine.name).await
            && session.cli.rm(ctx, &machine.name).await.is_ok()
        {
            let _ = session.save(ctx, machine).await;
            ctx.log(&format!(
                "removed machine {} left by an earlier attempt",
                machine.name
            ))
            .await;
        }
    }
}
