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
//! 4. docker-machine provider: every machine that is not gone yet is removed by a
//!    `teardown_machine` job of its own (see that kind), each with the provider
//!    account's concurrency key, so the account's limit decides how many run at once;
//!    this job waits for them. One machine failing does not stop the others: its job
//!    retries on its own, and when it ends with the machine still there, this attempt
//!    fails (retryable) naming it, and the next attempt makes new jobs for what is left.
//! 5. Every row `removed`, the deployment `torn_down`; or `leftovers` when a machine was
//!    abandoned (`lc stuck` lists it until `lc deploy ack NAME`). The deployment's keys
//!    are dropped once nothing is left.
//!
//! An expiry's delayed teardown (`expiry` in its payload, due at the deployment's
//! `expires_at`) is this job too, but first asks whether it has anything to do: not
//! when the deployment is torn down already, its expiry was moved since, or another
//! teardown is under way (`DeploymentStore::begin_teardown`).

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::{TEARDOWN_ATTEMPTS, TeardownPayload};

/// Removes a deployment's containers and machines: container stops plus one
/// docker-machine rm per machine. Each attempt may wait for running provision and
/// deploy jobs, so it has more attempts than other kinds.
pub struct Teardown;

impl JobType for Teardown {
    const KIND: JobKind = JobKind::named("teardown");
    type Payload = TeardownPayload;
    const TIMEOUT: Duration = Duration::from_secs(30 * MINUTE);
    const MAX_ATTEMPTS: i64 = TEARDOWN_ATTEMPTS;
    fn check(payload: &TeardownPayload) -> Result<(), String> {
        if payload
            .reason
            .as_ref()
            .is_some_and(|reason| reason.len() > 1000)
        {
            return Err("reason must be at most 1000 characters".into());
        }
        if payload.expiry.is_some_and(|generation| generation < 1) {
            return Err("expiry must be at least 1".into());
        }
        Ok(())
    }
}

impl KindPayload for TeardownPayload {
    type Kind = Teardown;
}

#[cfg(feature = "worker")]
mod handler {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use crate::kinds::{Deploy, HealthCheck, Provision, ProvisionMachine};
    use crate::{
        DeploymentState, Endpoint, MachineRow, MachineState, Provider, Spec, TeardownPayload,
        TeardownStart,
    };
    use lc_shared::kind::JobType;

    use super::Teardown;
    use crate::kinds::{PARALLEL_MACHINES, TeardownMachine};
    use crate::runtime::docker::Engine;
    use crate::runtime::handling::{
        dispatch, docker_error, env, local_endpoint, origin, pause, store_error, with_certificates,
    };
    use crate::runtime::machine_store::ScratchStore;
    use crate::runtime::session::certificate_files;
    use futures_util::StreamExt;
    use lc_worker::{Handler, JobContext, JobError};

    const STOP_GRACE: Duration = Duration::from_secs(10);
    /// Containers stopped at once on one engine.
    const PARALLEL_STOPS: usize = 8;

    /// What a worker does with a `teardown` job (see the file's doc).
    impl Handler for Teardown {
        async fn run(ctx: &JobContext, payload: TeardownPayload) -> Result<(), JobError> {
            let id = payload.deployment_id;
            let reason = payload
                .reason
                .clone()
                .unwrap_or_else(|| "teardown requested".to_owned());
            let store = &env(ctx)?.store;
            let start = store
                .begin_teardown(id, &reason, ctx.job().id, payload.expiry)
                .await
                .map_err(|err| store_error("start the teardown", err))?;
            let (spec, was) = match start {
                TeardownStart::Proceed { spec, was, .. } => (spec, was),
                TeardownStart::Skip(why) => {
                    ctx.log(&why).await;
                    return Ok(());
                }
                TeardownStart::NotFound => {
                    ctx.log(&format!(
                        "deployment {id} does not exist: nothing to tear down"
                    ))
                    .await;
                    return Ok(());
                }
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
            // Certificates are needed only to reach `tcp://` engines.
            let tls_engines = machines.iter().any(|machine| {
                machine
                    .engine_url
                    .as_deref()
                    .is_some_and(|url| url.starts_with("tcp://"))
            });
            let certs = match spec.provider {
                Provider::DockerMachine { .. } if tls_engines => certificate_files(ctx, id).await?,
                _ => None,
            };
            remove_containers(ctx, &spec, &machines, certs.as_ref()).await?;
            drop(certs);
            if let Provider::DockerMachine { .. } = spec.provider {
                remove_machines(ctx).await?;
            }
            if was == DeploymentState::TornDown {
                return Ok(());
            }
            let finished = store
                .finish_teardown(id, ctx.job().id)
                .await
                .map_err(|err| store_error("record the teardown", err))?;
            match finished {
                Some(DeploymentState::Leftovers) => {
                    ctx.log("teardown done, but some machines could not be confirmed removed: the deployment is `leftovers` until an operator checks the provider and runs `lc deploy ack`")
                    .await;
                }
                Some(_) => {
                    ctx.log(&format!(
                        "torn down: {} machine(s) and their containers removed",
                        machines.len()
                    ))
                    .await;
                }
                None => {}
            }
            Ok(())
        }
    }

    /// Cancels the deployment's queued provision and deploy jobs and waits until none runs.
    /// Its queued health checks are cancelled too (the chain ends here; a check running now
    /// finds the deployment tearing down when it records, and repairs nothing), without
    /// waiting for a running one.
    async fn wait_for_other_jobs(ctx: &JobContext, spec: &Spec) -> Result<(), JobError> {
        let id = deployment_id(ctx)?;
        let store = &env(ctx)?.store;
        let checks = store
            .cancel_queued_in_group(id, &[HealthCheck::KIND], "deployment is being torn down")
            .await
            .map_err(|err| store_error("cancel queued health checks", err))?;
        if !checks.is_empty() {
            ctx.log(&format!(
                "cancelled {} queued health check(s)",
                checks.len()
            ))
            .await;
        }
        let kinds = [Provision::KIND, ProvisionMachine::KIND, Deploy::KIND];
        let limit = spec
            .timeouts
            .machine
            .unwrap_or(env(ctx)?.config.machine_timeout)
            + ctx.lease() * 3;
        let started = Instant::now();
        let mut told = false;
        loop {
            let cancelled = store
                .cancel_queued_in_group(id, &kinds, "deployment is being torn down")
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
                .running_in_group(id, &kinds, ctx.job().id)
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

    /// The deployment of this teardown (its payload was parsed once already, so this
    /// cannot fail but for a defect).
    fn deployment_id(ctx: &JobContext) -> Result<uuid::Uuid, JobError> {
        serde_json::from_value::<TeardownPayload>(ctx.job().payload.clone())
            .map(|payload| payload.deployment_id)
            .map_err(|err| JobError::fatal_from("invalid teardown payload", err))
    }

    /// Stops and removes every container labelled with the deployment, on every engine
    /// its machines recorded: up to [`PARALLEL_MACHINES`] engines at once (each machine
    /// of a fleet is its own engine, and one after the other a 200-machine teardown
    /// would wait 200 connections in a row), a few containers at a time on each.
    async fn remove_containers(
        ctx: &JobContext,
        spec: &Spec,
        machines: &[MachineRow],
        certs: Option<&ScratchStore>,
    ) -> Result<(), JobError> {
        let mut engines: BTreeMap<String, Endpoint> = machines
            .iter()
            .filter_map(MachineRow::endpoint)
            .map(|endpoint| with_certificates(endpoint, certs))
            .map(|endpoint| (endpoint.url.clone(), endpoint))
            .collect();
        if let Provider::Local {} = spec.provider {
            let local = local_endpoint(&env(ctx)?.config);
            engines.entry(local.url.clone()).or_insert(local);
        }
        let removals: Vec<_> = engines
            .values()
            .map(|endpoint| remove_on_engine(ctx, spec, machines, endpoint))
            .collect();
        let results: Vec<Result<(), JobError>> = futures_util::stream::iter(removals)
            .buffer_unordered(PARALLEL_MACHINES)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// [`remove_containers`] on one engine, then the rows of its machines.
    async fn remove_on_engine(
        ctx: &JobContext,
        spec: &Spec,
        machines: &[MachineRow],
        endpoint: &Endpoint,
    ) -> Result<(), JobError> {
        let id = deployment_id(ctx)?;
        let grace = spec.timeouts.stop.unwrap_or(STOP_GRACE);
        let engine = match Engine::connect(endpoint, ctx.metrics()).await {
            Ok(engine) => engine,
            Err(err) if matches!(spec.provider, Provider::DockerMachine { .. }) => {
                // Removing the machine takes its containers with it.
                ctx.log(&format!(
                    "engine {} unreachable ({err}); its machine's removal removes its containers",
                    endpoint.url
                ))
                .await;
                return Ok(());
            }
            Err(err) => {
                return Err(docker_error(format!("cannot reach {}", endpoint.url), err));
            }
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
        // What `lc deploy show` lists follows what was removed, machine by machine.
        for machine in machines
            .iter()
            .filter(|machine| machine.engine_url.as_deref() == Some(endpoint.url.as_str()))
        {
            env(ctx)?
                .store
                .machine_containers_removed(machine.id, ctx.job().id)
                .await
                .map_err(|err| store_error("record the removed containers", err))?;
        }
        Ok(())
    }

    /// Removes every machine that is not gone yet (see step 4 above): one
    /// `teardown_machine` job each, as many at once as the provider account's
    /// concurrency key allows, and waits for them. Removals an earlier attempt started
    /// end first, so that one machine is never removed by two jobs at once.
    async fn remove_machines(ctx: &JobContext) -> Result<(), JobError> {
        let id = deployment_id(ctx)?;
        let store = &env(ctx)?.store;
        wait_for_removals(ctx, id).await?;
        let live = live_machines(ctx, id).await?;
        if live.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = live.iter().map(|machine| machine.id).collect();
        let round = format!("{}:{}", ctx.job().id, ctx.job().attempt);
        let enqueued = store
            .fan_out_removals(id, &ids, &origin(ctx), &round)
            .await
            .map_err(|err| store_error("enqueue the machines' removals", err))?;
        dispatch(ctx, &enqueued).await;
        ctx.log(&format!(
            "removing {} machine(s): one teardown_machine job each, as many at once as the provider account's limit allows",
            enqueued.len()
        ))
        .await;
        wait_for_removals(ctx, id).await?;
        let left = live_machines(ctx, id).await?;
        if !left.is_empty() {
            let names: Vec<&str> = left.iter().map(|machine| machine.name.as_str()).collect();
            return Err(JobError::retryable(format!(
                "{} machine(s) could not be removed (the others were; their teardown_machine jobs say why): {}",
                left.len(),
                names.join(", ")
            )));
        }
        Ok(())
    }

    /// The deployment's machines that are neither removed nor abandoned.
    async fn live_machines(ctx: &JobContext, id: uuid::Uuid) -> Result<Vec<MachineRow>, JobError> {
        let machines = env(ctx)?
            .store
            .machines(id)
            .await
            .map_err(|err| store_error("read the machines", err))?;
        Ok(machines
            .into_iter()
            .filter(|machine| {
                machine.state != MachineState::Removed && machine.state != MachineState::Abandoned
            })
            .collect())
    }

    /// Waits until no `teardown_machine` job of the deployment is queued or running
    /// (each is bounded by its own time limit and attempts).
    async fn wait_for_removals(ctx: &JobContext, id: uuid::Uuid) -> Result<(), JobError> {
        let store = &env(ctx)?.store;
        loop {
            let unfinished = store
                .jobs()
                .unfinished_in_group(id, &[TeardownMachine::KIND])
                .await
                .map_err(|err| store_error("count the machines' removals", err))?;
            if unfinished == 0 {
                return Ok(());
            }
            pause(ctx, Duration::from_millis(250)).await?;
        }
    }
}
