//! `deploy`: runs the payload container of one spec generation on every machine,
//! through the Docker Engine API of that machine's engine. The first generation goes
//! to up to `PARALLEL_MACHINES` machines at once (nothing runs yet, and a 200-node
//! fleet one machine after the other would wait 200 pulls); a later generation is a
//! rolling replacement, one machine at a time, so that the rest keep running.
//!
//! Per machine: connect (TLS for `tcp://`), check the image is there (pull it when
//! allowed; missing and not pullable is fatal), then look for this deployment's
//! containers on the machine by label. The container of this generation has a
//! deterministic name (`lc-<machine>-g<generation>`): if an earlier attempt created it,
//! it is adopted (started if it is not running). Containers of older generations are
//! stopped and removed first, since with `host` networking the new one may need their
//! ports. Before each machine the deployment's state and generation are read again, so
//! a teardown or a newer spec stops this job from going further; so does a machine that
//! failed (the machines already started finish first).

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::DeployPayload;

/// Runs one spec generation's containers: pulls and starts on every machine.
pub struct Deploy;

impl JobType for Deploy {
    const KIND: JobKind = JobKind::named("deploy");
    type Payload = DeployPayload;
    const TIMEOUT: Duration = Duration::from_secs(30 * MINUTE);
    fn check(payload: &DeployPayload) -> Result<(), String> {
        if payload.generation < 1 {
            return Err("generation must be at least 1".into());
        }
        Ok(())
    }
}

impl KindPayload for DeployPayload {
    type Kind = Deploy;
}

#[cfg(feature = "worker")]
pub use handler::PARALLEL_MACHINES;

#[cfg(feature = "worker")]
mod handler {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use futures_util::StreamExt;

    use crate::{
        ContainerState, DeployPayload, DeployStart, DeploymentState, LABEL_DEPLOYMENT,
        LABEL_DEPLOYMENT_NAME, LABEL_GENERATION, LABEL_JOB, LABEL_MACHINE, LABEL_NODE, MachineRow,
        Payload, Provider, Spec, container_name,
    };
    use lc_shared::store::error_chain;
    use uuid::Uuid;

    use super::Deploy;
    use crate::runtime::docker::{ContainerPlan, DockerError, Engine, Found};
    use crate::runtime::handling::{
        docker_error, env, is_final, origin, store_error, with_certificates,
    };
    use crate::runtime::machine_store::ScratchStore;
    use crate::runtime::session::certificate_files;
    use lc_worker::{Handler, JobContext, JobError};

    /// Stop grace of a container when the spec does not say.
    const DEFAULT_STOP: Duration = Duration::from_secs(10);

    /// Machines that a first deploy works on at once. Each is an engine of its own, so no
    /// provider API limits this; it bounds the worker's own connections and pulls
    /// (Terraform's default `-parallelism` is 10).
    pub const PARALLEL_MACHINES: usize = 16;

    /// What a worker does with a `deploy` job (see the file's doc).
    impl Handler for Deploy {
        async fn run(ctx: &JobContext, payload: DeployPayload) -> Result<(), JobError> {
            let store = &env(ctx)?.store;
            let start = store
                .begin_deploy(payload.deployment_id, payload.generation, ctx.job().id)
                .await
                .map_err(|err| store_error("start the deploy", err))?;
            let (name, spec, machines) = match start {
                DeployStart::NotFound => {
                    return Err(JobError::fatal(format!(
                        "deployment {} does not exist",
                        payload.deployment_id
                    )));
                }
                DeployStart::Superseded { current } => {
                    ctx.log(&format!(
                        "generation {} was replaced by {current}; its own deploy runs it",
                        payload.generation
                    ))
                    .await;
                    return Ok(());
                }
                DeployStart::Stop(state) => {
                    ctx.log(&format!("deployment is {state}: nothing to deploy"))
                        .await;
                    return Ok(());
                }
                DeployStart::Proceed {
                    name,
                    spec,
                    machines,
                } => (name, spec, machines),
            };
            match deploy_all(ctx, &payload, &name, &spec, &machines).await {
                Ok(true) => {
                    let finished = store
                        .finish_deploy(
                            payload.deployment_id,
                            payload.generation,
                            None,
                            &origin(ctx),
                        )
                        .await
                        .map_err(|err| store_error("record the deploy", err))?;
                    if let Some(chain) = finished {
                        ctx.log(&format!(
                            "generation {} runs on all {} machine(s)",
                            payload.generation,
                            machines.len()
                        ))
                        .await;
                        if let Some(first) = chain {
                            ctx.log(&format!("health checks start: job {}", first.id))
                                .await;
                        }
                    }
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(JobError::Cancelled) => Err(JobError::Cancelled),
                Err(err) => {
                    if is_final(ctx, &err) {
                        let text = error_chain(&err);
                        if let Err(store_err) = store
                            .finish_deploy(
                                payload.deployment_id,
                                payload.generation,
                                Some(&text),
                                &origin(ctx),
                            )
                            .await
                        {
                            tracing::warn!(error = %error_chain(&store_err), "could not record the failed deploy");
                        }
                    }
                    Err(err)
                }
            }
        }
    }

    /// Deploys every machine (the first generation [`PARALLEL_MACHINES`] at a time, later
    /// ones machine after machine); false when the deployment changed under it (teardown,
    /// newer generation) and the job stopped early. After a failure no further machine
    /// starts; the first error is the job's.
    async fn deploy_all(
        ctx: &JobContext,
        payload: &DeployPayload,
        name: &str,
        spec: &Spec,
        machines: &[MachineRow],
    ) -> Result<bool, JobError> {
        let certs = match spec.provider {
            Provider::DockerMachine { .. } => certificate_files(ctx, payload.deployment_id).await?,
            Provider::Local {} => None,
        };
        let certs = certs.as_ref();
        let parallel = if payload.generation == 1 {
            PARALLEL_MACHINES
        } else {
            1
        };
        let stopped = AtomicBool::new(false);
        let steps: Vec<_> = machines
            .iter()
            .map(|machine| deploy_next(&stopped, ctx, payload, name, spec, machine, certs))
            .collect();
        let results: Vec<Result<bool, JobError>> = futures_util::stream::iter(steps)
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut deployed_all = true;
        for result in results {
            deployed_all &= result?;
        }
        Ok(deployed_all)
    }

    /// One machine, unless the job was cancelled, the deployment changed (false then) or
    /// another machine failed (`stopped`; set here when this one does not deploy).
    async fn deploy_next(
        stopped: &AtomicBool,
        ctx: &JobContext,
        payload: &DeployPayload,
        name: &str,
        spec: &Spec,
        machine: &MachineRow,
        certs: Option<&ScratchStore>,
    ) -> Result<bool, JobError> {
        if stopped.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let result = async {
            if ctx.cancellation().is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let now = env(ctx)?
                .store
                .deployment_state(payload.deployment_id)
                .await
                .map_err(|err| store_error("read the deployment", err))?;
            match now {
                Some((DeploymentState::Deploying, generation))
                    if generation == payload.generation => {}
                Some((state, generation)) => {
                    ctx.log(&format!(
                        "deployment is now {state} (generation {generation}): stopping"
                    ))
                    .await;
                    return Ok(false);
                }
                None => return Ok(false),
            }
            deploy_machine(ctx, payload, name, spec, machine, certs).await?;
            Ok(true)
        }
        .await;
        if !matches!(result, Ok(true)) {
            stopped.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn deploy_machine(
        ctx: &JobContext,
        payload: &DeployPayload,
        deployment_name: &str,
        spec: &Spec,
        machine: &MachineRow,
        certs: Option<&ScratchStore>,
    ) -> Result<(), JobError> {
        let endpoint = machine.endpoint().ok_or_else(|| {
            JobError::fatal(format!(
                "machine {} has no engine endpoint recorded",
                machine.name
            ))
        })?;
        let endpoint = with_certificates(endpoint, certs);
        let engine = Engine::connect(&endpoint, ctx.metrics())
            .await
            .map_err(|err| docker_error(on_machine(machine, "cannot reach the engine"), err))?;
        let step = MachineStep {
            ctx,
            engine,
            machine,
            spec,
            deployment_id: payload.deployment_id,
            deployment_name,
            generation: payload.generation,
            node: spec.node_payload(machine.node_index),
            name: container_name(&machine.name, payload.generation),
        };
        step.ensure_image().await?;
        let current = step.remove_older_generations().await?;
        let id = match current {
            Some(existing) => step.adopt(existing).await?,
            None => step.create_and_start().await?,
        };
        step.check_running(&id).await
    }

    fn on_machine(machine: &MachineRow, what: &str) -> String {
        format!("{what} on machine {}", machine.name)
    }

    /// One machine's part of a deploy: its engine, its node's payload, its container.
    struct MachineStep<'a> {
        ctx: &'a JobContext,
        engine: Engine<'a>,
        machine: &'a MachineRow,
        spec: &'a Spec,
        deployment_id: Uuid,
        deployment_name: &'a str,
        generation: i64,
        node: Payload,
        /// The container of this machine and generation.
        name: String,
    }

    impl MachineStep<'_> {
        fn failed(&self, what: &str, err: DockerError) -> JobError {
            docker_error(on_machine(self.machine, what), err)
        }

        /// Pulls the image unless the engine has it (or the spec's pull policy says to).
        async fn ensure_image(&self) -> Result<(), JobError> {
            let (ctx, machine, image) = (self.ctx, self.machine, &self.node.image);
            let credentials = registry_credentials(self.spec, image)?;
            let mut progress = Vec::new();
            let pulled = self
                .engine
                .ensure_image(image, self.node.pull, credentials, &mut progress)
                .await;
            if !progress.is_empty() {
                ctx.log(&format!(
                    "pull of {image} on {}:\n{}",
                    machine.name,
                    progress.join("\n")
                ))
                .await;
            }
            if pulled.map_err(|err| self.failed("image check failed", err))? {
                ctx.log(&format!("pulled {image} on {}", machine.name))
                    .await;
            }
            Ok(())
        }

        /// Removes the containers of other generations; returns this generation's, if an
        /// earlier attempt made it.
        async fn remove_older_generations(&self) -> Result<Option<Found>, JobError> {
            let (ctx, machine) = (self.ctx, self.machine);
            let found = self
                .engine
                .containers(self.deployment_id, Some(&machine.name))
                .await
                .map_err(|err| self.failed("cannot list containers", err))?;
            let (current, older): (Vec<_>, Vec<_>) = found.into_iter().partition(|container| {
                container.name == self.name && container.generation == Some(self.generation)
            });
            let stop = self.spec.timeouts.stop.unwrap_or(DEFAULT_STOP);
            for old in &older {
                self.engine
                    .stop_and_remove(&old.id, stop)
                    .await
                    .map_err(|err| self.failed("cannot remove an older container", err))?;
                ctx.log(&format!(
                    "removed {} (generation {}) from {}",
                    old.name,
                    old.generation.unwrap_or(0),
                    machine.name
                ))
                .await;
            }
            if !older.is_empty() {
                env(ctx)?
                    .store
                    .containers_replaced(machine, self.generation, ctx.job().id)
                    .await
                    .map_err(|err| store_error("record replaced containers", err))?;
            }
            Ok(current.into_iter().next())
        }

        /// Adopts the container an earlier attempt made: started if it is not running.
        async fn adopt(&self, existing: Found) -> Result<String, JobError> {
            let (ctx, machine, name) = (self.ctx, self.machine, &self.name);
            if existing.state == "running" {
                ctx.log(&format!(
                    "{name} already runs on {} (an earlier attempt started it): adopting it",
                    machine.name
                ))
                .await;
                return Ok(existing.id);
            }
            ctx.log(&format!(
                "{name} exists on {} ({}): adopting and starting it",
                machine.name, existing.state
            ))
            .await;
            if existing.state == "created" {
                self.engine
                    .upload_files(&existing.id, &self.node.files)
                    .await
                    .map_err(|err| self.failed("cannot copy files", err))?;
            }
            self.engine
                .start(&existing.id)
                .await
                .map_err(|err| self.failed("cannot start the container", err))?;
            Ok(existing.id)
        }

        /// Records the container as being made, then creates and starts it.
        async fn create_and_start(&self) -> Result<String, JobError> {
            self.record(ContainerState::Creating, None, None).await?;
            let plan = plan(
                self.ctx.job().id,
                self.deployment_id,
                self.deployment_name,
                self.machine,
                self.generation,
                &self.name,
                self.spec,
            );
            let id = self
                .engine
                .create(&plan, self.deployment_id)
                .await
                .map_err(|err| self.failed("cannot create the container", err))?;
            self.engine
                .start(&id)
                .await
                .map_err(|err| self.failed("cannot start the container", err))?;
            self.ctx
                .log(&format!(
                    "started {} on {} ({})",
                    self.name,
                    self.machine.name,
                    &id[..id.len().min(12)]
                ))
                .await;
            Ok(id)
        }

        /// Checks that the container runs and records what it found.
        async fn check_running(&self, id: &str) -> Result<(), JobError> {
            if let Err(err) = self.engine.check_running(id, &self.name).await {
                let job_error = self.failed("container check failed", err);
                let text = error_chain(&job_error);
                self.record(ContainerState::Failed, Some(id), Some(&text))
                    .await?;
                return Err(job_error);
            }
            self.record(ContainerState::Running, Some(id), None).await
        }

        async fn record(
            &self,
            state: ContainerState,
            docker_id: Option<&str>,
            error: Option<&str>,
        ) -> Result<(), JobError> {
            record(
                self.ctx,
                self.machine,
                self.generation,
                &self.node.image,
                state,
                docker_id,
                error,
            )
            .await
        }
    }

    /// The registry login the spec names, read from this worker's environment now (the
    /// values go to the engine only, never to logs or the database).
    fn registry_credentials(
        spec: &Spec,
        image: &str,
    ) -> Result<Option<bollard::auth::DockerCredentials>, JobError> {
        let Some(login) = &spec.registry_credentials_env else {
            return Ok(None);
        };
        let read = |name: &str| {
            std::env::var(name).ok().filter(|value| !value.is_empty()).ok_or_else(|| {
                JobError::fatal(format!(
                    "registry credential variable {name} is not set in this worker's environment (the spec's registry_credentials_env names it)"
                ))
            })
        };
        // The registry is the image reference's first part when it looks like a host.
        let registry = image
            .split_once('/')
            .map(|(first, _)| first)
            .filter(|first| first.contains('.') || first.contains(':') || *first == "localhost")
            .map(str::to_owned);
        Ok(Some(bollard::auth::DockerCredentials {
            username: Some(read(&login.username)?),
            password: Some(read(&login.password)?),
            serveraddress: registry,
            ..Default::default()
        }))
    }

    async fn record(
        ctx: &JobContext,
        machine: &MachineRow,
        generation: i64,
        image: &str,
        state: ContainerState,
        docker_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), JobError> {
        env(ctx)?
            .store
            .record_container(
                machine,
                generation,
                image,
                state,
                docker_id,
                error,
                ctx.job().id,
            )
            .await
            .map_err(|err| store_error("record the container", err))
    }

    /// The container of one machine and generation: image, command, env (the spec's plus
    /// `LC_DEPLOYMENT`, `LC_MACHINE`, `LC_NODE`, `LC_GENERATION`), labels, networking.
    fn plan(
        job_id: Uuid,
        deployment_id: Uuid,
        deployment_name: &str,
        machine: &MachineRow,
        generation: i64,
        name: &str,
        spec: &Spec,
    ) -> ContainerPlan {
        let node = spec.node_payload(machine.node_index);
        let mut env: Vec<String> = node
            .env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        env.push(format!("LC_DEPLOYMENT={deployment_name}"));
        env.push(format!("LC_MACHINE={}", machine.name));
        env.push(format!("LC_NODE={}", machine.node_index));
        env.push(format!("LC_GENERATION={generation}"));
        let mut labels: HashMap<String, String> = node.labels.clone().into_iter().collect();
        labels.insert(LABEL_DEPLOYMENT.to_owned(), deployment_id.to_string());
        labels.insert(LABEL_DEPLOYMENT_NAME.to_owned(), deployment_name.to_owned());
        labels.insert(LABEL_MACHINE.to_owned(), machine.name.clone());
        labels.insert(LABEL_NODE.to_owned(), machine.node_index.to_string());
        labels.insert(LABEL_JOB.to_owned(), job_id.to_string());
        labels.insert(LABEL_GENERATION.to_owned(), generation.to_string());
        ContainerPlan {
            name: name.to_owned(),
            image: node.image.clone(),
            command: node.command.clone(),
            env,
            labels,
            network_mode: node.network_mode.as_str(),
            restart_policy: node.restart_policy,
            files: node.files.clone(),
        }
    }
}
