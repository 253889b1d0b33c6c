//! `health_check`: looks at every machine of a deployed deployment and its payload
//! container, then records what it found and acts on it in one transaction (see the
//! store's `health`): the repair its spec's policy asks for, `degraded` past
//! `max_unhealthy`, and the next check of the chain.
//!
//! Per machine: its engine is asked (through the Docker Engine API, TLS for `tcp://`)
//! for the deployment's containers on it, by label; the current generation's container
//! must exist, run, and have the image the spec gives the node. When something is
//! wrong with a docker-machine machine (its engine does not answer, or its container
//! is not right), the provider is asked too (`docker-machine status`, one call, only
//! then): a machine the provider says is gone is "machine missing". Healthy machines
//! cost one engine connection and one container list per check, and no provider call.
//!
//! Nothing here fails the job for what it finds: an engine that does not answer is a
//! finding. Only the database failing makes it retry.

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::HealthCheckPayload;

/// Checks a deployed deployment's machines and containers, records their health, and
/// repairs what its spec's policy says (see `crate::health`). Its jobs carry the
/// concurrency key `health:<deployment id>` of limit 1 (the store's `health` makes
/// them): one check of a deployment runs at a time, across every worker. Many
/// attempts: a chain link that died would end the deployment's periodic checks.
pub struct HealthCheck;

impl JobType for HealthCheck {
    const KIND: JobKind = JobKind::named("health_check");
    type Payload = HealthCheckPayload;
    const MAX_ATTEMPTS: i64 = 25;
    /// One engine call or two per machine, a provider status call per unhealthy one.
    const TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
    fn check(payload: &HealthCheckPayload) -> Result<(), String> {
        if payload.chain.is_some_and(|link| link < 1) {
            return Err("chain must be at least 1".into());
        }
        Ok(())
    }
}

impl KindPayload for HealthCheckPayload {
    type Kind = HealthCheck;
}

#[cfg(feature = "worker")]
mod handler {
    use std::time::Duration;

    use crate::health::{Health, NodeCheck, Problem};
    use crate::{
        HealthCheckPayload, HealthStart, MachineRow, MachineState, Provider, Spec, container_name,
    };
    use lc_shared::store::error_chain;
    use uuid::Uuid;

    use super::HealthCheck;
    use crate::runtime::docker::Engine;
    use crate::runtime::handling::{dispatch, env, origin, store_error, with_certificates};
    use crate::runtime::machine_store::ScratchStore;
    use crate::runtime::session::{Loaded, MachineSession, certificate_files};
    use lc_worker::{Handler, JobContext, JobError};

    /// How long one machine's engine gets to answer a check.
    const ENGINE_WAIT: Duration = Duration::from_secs(20);

    /// What a worker does with a `health_check` job (see the file's doc).
    impl Handler for HealthCheck {
        async fn run(ctx: &JobContext, payload: HealthCheckPayload) -> Result<(), JobError> {
            let store = &env(ctx)?.store;
            let id = payload.deployment_id;
            let start = store
                .health_start(id)
                .await
                .map_err(|err| store_error("read the deployment", err))?;
            let (checks, generation) = match start {
                HealthStart::NotFound => {
                    ctx.log("the deployment is gone: the checks end").await;
                    return Ok(());
                }
                HealthStart::Stop(state) => {
                    ctx.log(&format!("deployment is {state}: the checks end"))
                        .await;
                    return Ok(());
                }
                HealthStart::Skip(state) => {
                    ctx.log(&format!("deployment is {state}: nothing to check now"))
                        .await;
                    (Vec::new(), 0)
                }
                HealthStart::Check {
                    name,
                    spec,
                    generation,
                    machines,
                } => {
                    let certs = match spec.provider {
                        Provider::DockerMachine { .. } => certificate_files(ctx, id).await?,
                        Provider::Local {} => None,
                    };
                    let look = Look {
                        ctx,
                        deployment_id: id,
                        deployment_name: &name,
                        spec: &spec,
                        generation,
                        certs: certs.as_ref(),
                    };
                    let mut checks = Vec::with_capacity(machines.len());
                    for machine in &machines {
                        if ctx.cancellation().is_cancelled() {
                            return Err(JobError::Cancelled);
                        }
                        checks.push(look.node(machine).await);
                    }
                    (checks, generation)
                }
            };
            let outcome = store
                .record_health(id, generation, payload.chain, &checks, &origin(ctx))
                .await
                .map_err(|err| store_error("record the health check", err))?;
            for check in checks.iter().filter(|check| check.problem.is_some()) {
                ctx.log(&format!(
                    "{}: machine {} ({}), container {} ({})",
                    check.machine,
                    check.machine_health,
                    check.machine_reason,
                    check.container_health,
                    check.container_reason
                ))
                .await;
            }
            if let Some(decision) = &outcome.decision {
                ctx.log(&format!(
                    "decision: {decision:?}; deployment {}",
                    outcome.state
                ))
                .await;
            }
            dispatch(ctx, &outcome.repairs).await;
            if let Some(next) = &outcome.next {
                ctx.log(&format!("next check: job {}", next.id)).await;
            }
            Ok(())
        }
    }

    /// One check's view of a deployment.
    struct Look<'a> {
        ctx: &'a JobContext,
        deployment_id: Uuid,
        deployment_name: &'a str,
        spec: &'a Spec,
        generation: i64,
        certs: Option<&'a ScratchStore>,
    }

    /// What the engine said of the node's container.
    enum Container {
        Running,
        /// Wrong, with why; `restartable`: a deploy fixes it.
        Wrong {
            reason: String,
            restartable: bool,
        },
    }

    impl Look<'_> {
        async fn node(&self, machine: &MachineRow) -> NodeCheck {
            let mut check = NodeCheck {
                machine_id: machine.id,
                machine: machine.name.clone(),
                node: machine.node_index,
                machine_health: Health::Healthy,
                machine_reason: "engine answers".into(),
                container_health: Health::Healthy,
                container_reason: "running".into(),
                problem: None,
            };
            if machine.state != MachineState::Ready {
                check.machine_health = Health::Unknown;
                check.machine_reason = format!("machine is {}", machine.state);
                check.container_health = Health::Unknown;
                check.container_reason = "not checked".into();
                return check;
            }
            let container = match self.container(machine).await {
                Ok(Container::Running) => return check,
                Ok(Container::Wrong {
                    reason,
                    restartable,
                }) => {
                    check.container_health = Health::Unhealthy;
                    check.container_reason = reason;
                    check.problem = Some(Problem::Container { restartable });
                    true
                }
                Err(reason) => {
                    check.machine_health = Health::Unhealthy;
                    check.machine_reason = format!("engine does not answer: {reason}");
                    check.container_health = Health::Unknown;
                    check.container_reason = "engine does not answer".into();
                    check.problem = Some(Problem::Unreachable);
                    false
                }
            };
            // Something is wrong: is the machine still there?
            if let Some(gone) = self.gone_at_provider(machine).await {
                check.machine_health = Health::Unhealthy;
                check.machine_reason = format!("machine missing: {gone}");
                if container {
                    check.container_reason =
                        format!("{} (machine missing)", check.container_reason);
                }
                check.problem = Some(Problem::MachineMissing);
            }
            check
        }

        /// The node's container as its engine says; `Err` when the engine does not answer.
        async fn container(&self, machine: &MachineRow) -> Result<Container, String> {
            let endpoint = machine
                .endpoint()
                .ok_or_else(|| "no engine endpoint recorded".to_owned())?;
            let endpoint = with_certificates(endpoint, self.certs);
            let metrics = self.ctx.metrics();
            let found = tokio::time::timeout(ENGINE_WAIT, async {
                let engine = Engine::connect(&endpoint, metrics).await?;
                engine
                    .containers(self.deployment_id, Some(&machine.name))
                    .await
            })
            .await
            .map_err(|_| format!("no answer within {ENGINE_WAIT:?}"))?
            .map_err(|err| error_chain(&err))?;
            let name = container_name(&machine.name, self.generation);
            let Some(container) = found
                .iter()
                .find(|c| c.name == name && c.generation == Some(self.generation))
            else {
                return Ok(Container::Wrong {
                    reason: format!("missing: no container {name} on the engine"),
                    restartable: true,
                });
            };
            if container.state != "running" {
                return Ok(Container::Wrong {
                    reason: format!(
                        "{} ({})",
                        container.state,
                        container.status.as_deref().unwrap_or("no status")
                    ),
                    restartable: true,
                });
            }
            let expected = self.spec.node_payload(machine.node_index).image;
            // The engine shows the image id instead of the name once the name has moved on.
            if let Some(image) = &container.image
                && !image.starts_with("sha256:")
                && *image != expected
            {
                return Ok(Container::Wrong {
                    reason: format!("runs image {image}, expected {expected}"),
                    restartable: false,
                });
            }
            Ok(Container::Running)
        }

        /// Whether the provider says the machine is gone (`Some(why)`); `None` when it
        /// says it exists, when it cannot tell, and for the `local` provider.
        async fn gone_at_provider(&self, machine: &MachineRow) -> Option<String> {
            let Provider::DockerMachine { .. } = self.spec.provider else {
                return None;
            };
            let ctx = self.ctx;
            let session = match MachineSession::open(
                ctx,
                self.deployment_id,
                self.deployment_name,
                self.spec,
                false,
            )
            .await
            {
                Ok(session) => session,
                Err(err) => {
                    ctx.log(&format!(
                        "cannot ask the provider about {}: {}",
                        machine.name,
                        error_chain(&err)
                    ))
                    .await;
                    return None;
                }
            };
            match session.load(ctx, machine).await {
                Ok(Loaded::Entry) => {}
                Ok(other) => {
                    ctx.log(&format!(
                        "no usable docker-machine state for {}: {other:?}",
                        machine.name
                    ))
                    .await;
                    return None;
                }
                Err(err) => {
                    ctx.log(&format!("{}: {}", machine.name, error_chain(&err)))
                        .await;
                    return None;
                }
            }
            match session.cli.status(ctx, &machine.name).await {
                Ok(None) => Some("docker-machine says it does not exist".into()),
                Ok(Some(_)) => None,
                Err(err) if err.gone_at_provider() => Some(format!(
                    "the provider does not have it ({})",
                    crate::truncate_text(&err.to_string(), 300)
                )),
                Err(err) => {
                    ctx.log(&format!(
                        "docker-machine status {}: {}",
                        machine.name,
                        error_chain(&err)
                    ))
                    .await;
                    None
                }
            }
        }
    }
}
