//! `teardown`: removes a deployment's containers, then its machines; safe to run twice
//! (everything "already gone" counts as done) and safe while provisioning runs.
//!
//! 1. The deployment becomes `tearing_down` (in the request's transaction already, for
//!    `lc deploy teardown`), so the fan-out, `provision_machine` and `deploy` make
//!    nothing new from then on.
//! 2. Queued `provision`, `provision_machine` and `deploy` jobs of the deployment are
//!    cancelled; running ones are waited for (a running create finishes, finds the
//!    deployment tearing down, and removes its machine itself). A job whose worker died
//!    comes back to the queue when its lease expires and is cancelled then. The wait
//!    is bounded; past it the attempt fails and is retried.
//! 3. Containers carrying the deployment's label are stopped and removed on every
//!    engine the machines recorded.
//! 4. docker-machine provider: `rm -y` every machine, then `ls` the deployment's store
//!    and remove whatever is still there, even machines the database never heard of
//!    (a create interrupted before its machine was recorded); a machine still being
//!    created is waited for first. The store must list nothing at the end.
//! 5. Every row `removed`, the deployment `torn_down`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lc_shared::JobKind;
use lc_shared::deployment::{
    DeploymentState, Endpoint, MachineRow, MachineState, Provider, Spec, TeardownPayload,
    TeardownStart,
};

use super::provision::settle;
use super::{docker_error, local_endpoint, pause, store_error};
use crate::docker::Engine;
use crate::handlers::{JobContext, JobError};
use crate::machine::MachineCli;

const STOP_GRACE: Duration = Duration::from_secs(10);
/// Containers stopped at once on one engine.
const PARALLEL_STOPS: usize = 8;

pub async fn teardown(ctx: &JobContext) -> Result<(), JobError> {
    let payload: TeardownPayload = ctx.payload()?;
    let id = payload.deployment_id;
    let reason = payload
        .reason
        .clone()
        .unwrap_or_else(|| "teardown requested".to_owned());
    let store = &ctx.worker.store;
    let start = store
        .begin_teardown(id, &reason, ctx.job.id)
        .await
        .map_err(|err| store_error("start the teardown", err))?;
    let TeardownStart::Proceed { spec, was, .. } = start else {
        ctx.log(&format!(
            "deployment {id} does not exist: nothing to tear down"
        ))
        .await;
        return Ok(());
    };
    if was == DeploymentState::TornDown {
        ctx.log("deployment is torn down already: checking that nothing is left")
            .await;
    }
    wait_for_other_jobs(ctx, &spec).await?;
    // Read the machines again: jobs that finished while we waited may have changed them.
    let machines = store
        .machines(id)
        .await
        .map_err(|err| store_error("read the machines", err))?;
    remove_containers(ctx, &spec, &machines).await?;
    if let Provider::DockerMachine { .. } = spec.provider {
        remove_machines(ctx, &spec, &machines).await?;
    }
    if was != DeploymentState::TornDown
        && store
            .finish_teardown(id, ctx.job.id)
            .await
            .map_err(|err| store_error("record the teardown", err))?
    {
        ctx.log(&format!(
            "torn down: {} machine(s) and their containers removed",
            machines.len()
        ))
        .await;
    }
    Ok(())
}

/// Cancels the deployment's queued provision and deploy jobs and waits until none runs.
async fn wait_for_other_jobs(ctx: &JobContext, spec: &Spec) -> Result<(), JobError> {
    let id = deployment_id(ctx)?;
    let store = &ctx.worker.store;
    let kinds = [
        JobKind::Provision,
        JobKind::ProvisionMachine,
        JobKind::Deploy,
    ];
    let limit = spec
        .timeouts
        .machine
        .unwrap_or(ctx.worker.config.machine_timeout)
        + ctx.worker.config.lease * 3;
    let started = Instant::now();
    let mut told = false;
    loop {
        let cancelled = store
            .cancel_queued_jobs(id, &kinds, "deployment is being torn down")
            .await
            .map_err(|err| store_error("cancel queued jobs", err))?;
        if !cancelled.is_empty() {
            ctx.log(&format!(
                "cancelled {} queued provision/deploy job(s)",
                cancelled.len()
            ))
            .await;
        }
        let running = store
            .running_deployment_jobs(id, &kinds, ctx.job.id)
            .await
            .map_err(|err| store_error("list running jobs", err))?;
        if running.is_empty() {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(JobError::retryable(format!(
                "{} provision/deploy job(s) of the deployment still run after {limit:?}",
                running.len()
            )));
        }
        if !told {
            let list: Vec<String> = running
                .iter()
                .map(|(id, kind)| format!("{kind} {id}"))
                .collect();
            ctx.log(&format!(
                "waiting for running jobs to stop: {}",
                list.join(", ")
            ))
            .await;
            told = true;
        }
        pause(ctx, Duration::from_millis(250)).await?;
    }
}

fn deployment_id(ctx: &JobContext) -> Result<uuid::Uuid, JobError> {
    Ok(ctx.payload::<TeardownPayload>()?.deployment_id)
}

/// Stops and removes every container labelled with the deployment, on every engine
/// its machines recorded.
async fn remove_containers(
    ctx: &JobContext,
    spec: &Spec,
    machines: &[MachineRow],
) -> Result<(), JobError> {
    let id = deployment_id(ctx)?;
    let mut engines: BTreeMap<String, Endpoint> = machines
        .iter()
        .filter_map(MachineRow::endpoint)
        .map(|endpoint| (endpoint.url.clone(), endpoint))
        .collect();
    if let Provider::Local {} = spec.provider {
        let local = local_endpoint(&ctx.worker.config);
        engines.entry(local.url.clone()).or_insert(local);
    }
    let grace = spec.timeouts.stop.unwrap_or(STOP_GRACE);
    for endpoint in engines.values() {
        let engine = match Engine::connect(endpoint, &ctx.worker.metrics).await {
            Ok(engine) => engine,
            Err(err) if matches!(spec.provider, Provider::DockerMachine { .. }) => {
                // Removing the machine takes its containers with it.
                ctx.log(&format!(
                    "engine {} unreachable ({err}); its machine's removal removes its containers",
                    endpoint.url
                ))
                .await;
                continue;
            }
            Err(err) => return Err(docker_error(format!("cannot reach {}", endpoint.url), err)),
        };
        let found = engine.containers(id, None).await.map_err(|err| {
            docker_error(format!("cannot list containers on {}", endpoint.url), err)
        })?;
        // A few at a time: each may take up to the stop grace.
        for batch in found.chunks(PARALLEL_STOPS) {
            let stops = batch.iter().map(|container| async {
                engine
                    .stop_and_remove(&container.id, grace)
                    .await
                    .map_err(|err| docker_error(format!("cannot remove {}", container.name), err))
            });
            for result in futures_util::future::join_all(stops).await {
                result?;
            }
            let names: Vec<&str> = batch
                .iter()
                .map(|container| container.name.as_str())
                .collect();
            ctx.log(&format!(
                "removed container(s) {} from {}",
                names.join(", "),
                endpoint.url
            ))
            .await;
        }
    }
    Ok(())
}

/// `rm -y` every machine, then whatever else the deployment's store lists.
async fn remove_machines(
    ctx: &JobContext,
    spec: &Spec,
    machines: &[MachineRow],
) -> Result<(), JobError> {
    let id = deployment_id(ctx)?;
    // Credentials that are not set here are left out: rm and ls work from the store.
    let cli = MachineCli::new(&ctx.worker.config, id, spec, false).map_err(|err| {
        JobError::retryable_from("cannot run docker-machine to remove the machines", err)
    })?;
    let store = &ctx.worker.store;
    let live = [
        MachineState::Pending,
        MachineState::Creating,
        MachineState::Ready,
        MachineState::Failed,
        MachineState::Removing,
    ];
    let retryable = |what: &'static str| {
        move |err: crate::machine::MachineError| match err {
            crate::machine::MachineError::Cancelled { .. } => JobError::Cancelled,
            err => JobError::retryable_from(what, err),
        }
    };
    for machine in machines
        .iter()
        .filter(|machine| machine.state != MachineState::Removed.as_str())
    {
        store
            .set_machine(
                machine.id,
                &live,
                MachineState::Removing,
                "teardown",
                Some(ctx.job.id),
            )
            .await
            .map_err(|err| store_error("mark the machine removing", err))?;
        settle(ctx, &cli, &machine.name).await?;
        let removed = cli
            .rm(ctx, &machine.name)
            .await
            .map_err(retryable("docker-machine rm failed"))?;
        if !removed {
            ctx.log(&format!(
                "machine {} does not exist: nothing to remove",
                machine.name
            ))
            .await;
        }
    }
    for listed in cli
        .ls(ctx)
        .await
        .map_err(retryable("docker-machine ls failed"))?
    {
        ctx.log(&format!(
            "store still lists {} ({}): removing it",
            listed.name, listed.state
        ))
        .await;
        settle(ctx, &cli, &listed.name).await?;
        cli.rm(ctx, &listed.name)
            .await
            .map_err(retryable("docker-machine rm failed"))?;
    }
    let left = cli
        .ls(ctx)
        .await
        .map_err(retryable("docker-machine ls failed"))?;
    if !left.is_empty() {
        let names: Vec<&str> = left.iter().map(|listed| listed.name.as_str()).collect();
        return Err(JobError::retryable(format!(
            "machines still listed after removal: {}",
            names.join(", ")
        )));
    }
    ctx.log(&format!(
        "machine store {} lists nothing",
        cli.storage().display()
    ))
    .await;
    Ok(())
}
