//! `provision` and `provision_machine`.
//!
//! `provision` fans out: in one transaction it writes a machine row per node and
//! enqueues one `provision_machine` job per machine (key
//! `provision:<deployment>:<generation>:<n>`), so machines are created in parallel
//! across workers, plus the deployment's watchdog (a `provision` job with `watch`).
//!
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
//! last attempt, or an operator cancelled it) is caught by the watchdog, which runs
//! every lease period while the deployment is provisioning.

use std::time::{Duration, Instant};

use lc_shared::deployment::{
    Endpoint, FanOut, MachineRow, MachineStart, Provider, ProvisionMachinePayload,
    ProvisionPayload, ReadyOutcome, Spec, WatchOutcome,
};
use lc_shared::store::error_chain;

use super::{dispatch, docker_error, is_final, local_endpoint, origin, pause, store_error};
use crate::docker::Engine;
use crate::handlers::{JobContext, JobError};
use crate::machine::MachineCli;

/// How often the watchdog looks: a lease period (a lost job is only visible after its
/// lease expired), at least a second.
fn watch_interval(ctx: &JobContext) -> Duration {
    ctx.worker.config.lease.max(Duration::from_secs(1))
}

pub async fn provision(ctx: &JobContext) -> Result<(), JobError> {
    let payload: ProvisionPayload = ctx.payload()?;
    let store = &ctx.worker.store;
    let id = payload.deployment_id;
    let interval = watch_interval(ctx);
    let Some(watch) = payload.watch else {
        let fan_out = store
            .fan_out_provision(id, &origin(ctx), interval)
            .await
            .map_err(|err| store_error("fan out the machines", err))?;
        return match fan_out {
            FanOut::Enqueued(jobs) => {
                ctx.log(&format!(
                    "enqueued {} provision_machine job(s) and the provisioning watchdog",
                    jobs.len().saturating_sub(1)
                ))
                .await;
                dispatch(ctx, &jobs).await;
                Ok(())
            }
            FanOut::NotProvisioning(state) => {
                ctx.log(&format!("deployment is {state}; nothing to provision"))
                    .await;
                Ok(())
            }
            FanOut::NotFound => Err(JobError::fatal(format!("deployment {id} does not exist"))),
        };
    };
    match store
        .provision_watch(id, watch, interval, &origin(ctx))
        .await
        .map_err(|err| store_error("check on the provisioning", err))?
    {
        WatchOutcome::Done(state) => {
            ctx.log(&format!("deployment is {state}; the watch ends"))
                .await;
        }
        WatchOutcome::Failed { machine, teardown } => {
            ctx.log(&format!(
                "machine {machine}'s job ended without the machine: deployment failed, rollback teardown {}",
                teardown.id
            ))
            .await;
            dispatch(ctx, &[teardown]).await;
        }
        // Due later: the sweeper dispatches it then.
        WatchOutcome::Rescheduled(_) | WatchOutcome::NotFound => {}
    }
    Ok(())
}

pub async fn provision_machine(ctx: &JobContext) -> Result<(), JobError> {
    let payload: ProvisionMachinePayload = ctx.payload()?;
    let store = &ctx.worker.store;
    let start = store
        .begin_machine(payload.deployment_id, payload.node, ctx.job.id)
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
        MachineStart::Create {
            machine,
            spec,
            fresh,
            ..
        } => {
            match create_and_record(ctx, &machine, &spec, fresh).await {
                Ok(()) => Ok(()),
                Err(JobError::Cancelled) => Err(JobError::Cancelled),
                Err(err) => {
                    let text = error_chain(&err);
                    if is_final(ctx, &err) {
                        match store
                            .machine_failed(payload.deployment_id, machine.id, &text, &origin(ctx))
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
                    } else if let Err(store_err) = store.machine_error(machine.id, &text).await {
                        tracing::warn!(error = %error_chain(&store_err), "could not note the machine's error");
                    }
                    Err(err)
                }
            }
        }
    }
}

/// Creates (or adopts) the machine, then records it ready; if the deployment stopped
/// provisioning in between, removes it again.
async fn create_and_record(
    ctx: &JobContext,
    machine: &MachineRow,
    spec: &Spec,
    fresh: bool,
) -> Result<(), JobError> {
    let endpoint = match &spec.provider {
        Provider::Local {} => {
            let endpoint = local_endpoint(&ctx.worker.config);
            Engine::connect(&endpoint, &ctx.worker.metrics)
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
            let cli = MachineCli::new(&ctx.worker.config, machine.deployment_id, spec, true)
                .map_err(|err| err.into_job_error("cannot run docker-machine"))?;
            create_with_docker_machine(ctx, &cli, machine, spec, driver, fresh).await?
        }
    };
    if ctx.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let outcome = ctx
        .worker
        .store
        .machine_ready(machine.deployment_id, machine.id, &endpoint, &origin(ctx))
        .await
        .map_err(|err| store_error("record the machine ready", err))?;
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
                let cli = MachineCli::new(&ctx.worker.config, machine.deployment_id, spec, false)
                    .map_err(|err| err.into_job_error("cannot run docker-machine"))?;
                cli.rm(ctx, &machine.name).await.map_err(|err| {
                    err.into_job_error("could not remove the machine made during teardown")
                })?;
            }
        }
    }
    Ok(())
}

async fn create_with_docker_machine(
    ctx: &JobContext,
    cli: &MachineCli,
    machine: &MachineRow,
    spec: &Spec,
    driver: &str,
    fresh: bool,
) -> Result<Endpoint, JobError> {
    let name = &machine.name;
    let existing = if fresh {
        None
    } else {
        settle(ctx, cli, name).await?
    };
    let create = match existing {
        Some(status) if status == "Running" => {
            ctx.log(&format!("machine {name} exists and runs: adopting it"))
                .await;
            false
        }
        Some(status) => {
            ctx.log(&format!(
                "machine {name} is half made (status {status}): removing it before creating"
            ))
            .await;
            cli.rm(ctx, name)
                .await
                .map_err(|err| err.into_job_error("could not remove a half-made machine"))?;
            true
        }
        None => true,
    };
    if create && let Err(err) = cli.create(ctx, name, driver, &spec.driver_args()).await {
        if err.already_exists() {
            return Err(JobError::retryable_from(
                "another attempt created the machine at the same time; the next attempt adopts it",
                err,
            ));
        }
        if !matches!(err, crate::machine::MachineError::Cancelled { .. }) {
            // A failed create can leave a half-made machine: remove it now, so the
            // next attempt (or the rollback) starts clean. Best effort: the next
            // attempt checks again.
            if let Ok(Some(_)) = cli.status(ctx, name).await {
                let _ = cli.rm(ctx, name).await;
            }
        }
        return Err(err.into_job_error("docker-machine create failed"));
    }
    let (info, url) = tokio::join!(cli.inspect(ctx, name), cli.url(ctx, name));
    let info = info
        .map_err(|err| err.into_job_error("docker-machine inspect failed"))?
        .ok_or_else(|| {
            JobError::retryable(format!("machine {name} vanished right after create"))
        })?;
    let url = url.map_err(|err| err.into_job_error("docker-machine url failed"))?;
    let tls = url.starts_with("tcp://");
    Ok(Endpoint {
        url,
        ip_address: info.ip_address,
        driver: Some(info.driver_name),
        ca_cert_path: info.ca_cert_path.filter(|_| tls),
        client_cert_path: info.client_cert_path.filter(|_| tls),
        client_key_path: info.client_key_path.filter(|_| tls),
    })
}

/// The machine's status once no create is running on it: `None` when it does not
/// exist. A machine still `Starting` is being created by an earlier attempt whose
/// worker died (docker-machine runs in its own process group, so it outlives a
/// SIGKILLed worker): wait for it, up to one call's time limit.
pub(super) async fn settle(
    ctx: &JobContext,
    cli: &MachineCli,
    name: &str,
) -> Result<Option<String>, JobError> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let status = cli
            .status(ctx, name)
            .await
            .map_err(|err| err.into_job_error("docker-machine status failed"))?;
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
            other => return Ok(other),
        }
    }
}

/// Removes a machine an earlier attempt may have made, once the deployment stopped
/// provisioning. Best effort: the teardown removes whatever the store still lists.
async fn remove_leftover(ctx: &JobContext, machine: &MachineRow, spec: &Spec) {
    let Provider::DockerMachine { .. } = spec.provider else {
        return;
    };
    let cli = match MachineCli::new(&ctx.worker.config, machine.deployment_id, spec, false) {
        Ok(cli) => cli,
        Err(err) => {
            ctx.log(&format!("cannot check for a leftover machine: {err}"))
                .await;
            return;
        }
    };
    if let Ok(Some(_)) = settle(ctx, &cli, &machine.name).await
        && cli.rm(ctx, &machine.name).await.is_ok()
    {
        ctx.log(&format!(
            "removed machine {} left by an earlier attempt",
            machine.name
        ))
        .await;
    }
}
