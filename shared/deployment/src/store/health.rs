//! Health checks: the chain of `health_check` jobs, a check asked for now, what a check
//! starts from, and what it records, with the repair or the `degraded` state it
//! implies, in one transaction that locks the deployment row (like every change of a
//! deployment's fate).
//!
//! The chain: `deployments.health_chain` is the number of the current link. The first
//! link is enqueued in the transaction that makes the deployment `deployed` (unless a
//! link is queued or running already); each link, in the transaction that records what
//! it found, enqueues link `n + 1` one interval later, so the chain survives any crash
//! of a worker (the link is a job: retried, its lease taken over) and there is never a
//! second chain (a link that is not the current one enqueues nothing). It ends when
//! the deployment is being torn down or gone. Every check carries the concurrency key
//! `health:<deployment>` of limit 1: never two at once for one deployment.

use crate::HealthCheckPayload;
use crate::health::{Decision, NodeCheck, decide};

use super::*;
use lc_shared::telemetry::job_trace;
use tracing::Instrument;

/// What a `health_check` job starts from.
#[derive(Clone, Debug)]
pub enum HealthStart {
    /// Check these machines (ready ones, with their engines) against this spec.
    Check {
        name: String,
        spec: Box<Spec>,
        generation: i64,
        machines: Vec<MachineRow>,
    },
    /// Nothing to check now (provisioning, deploying, failed): the chain goes on.
    Skip(DeploymentState),
    /// Being torn down, or gone: the chain ends.
    Stop(DeploymentState),
    NotFound,
}

/// What recording a check did.
#[derive(Clone, Debug)]
pub struct HealthOutcome {
    /// What was decided (`None`: nothing was checked, or the deployment moved on
    /// since the check started and the findings were only recorded).
    pub decision: Option<Decision>,
    /// The deployment's state after the transaction.
    pub state: DeploymentState,
    /// The jobs it enqueued: repairs (to dispatch now) and the next link (delayed).
    pub repairs: Vec<Enqueued>,
    pub next: Option<Enqueued>,
}

/// What `lc deploy check` did.
#[derive(Clone, Debug)]
pub enum CheckRequest {
    /// A check is enqueued (or one asked for earlier still waits: `created` false).
    Enqueued(Enqueued),
    /// Being torn down, or gone.
    NotLive(DeploymentState),
    NotFound,
}

fn ended(state: DeploymentState) -> bool {
    matches!(
        state,
        DeploymentState::TearingDown | DeploymentState::Leftovers | DeploymentState::TornDown
    )
}

/// The concurrency key every check of a deployment carries, with a limit of 1: one check
/// of a deployment runs at a time, across every worker.
fn check_key(deployment_id: Uuid) -> String {
    format!("health:{deployment_id}")
}

/// A check job of the deployment: link `chain` of the chain, or one asked for now.
fn check_job(
    deployment_id: Uuid,
    chain: Option<i64>,
    key: String,
    origin: &Origin,
) -> Result<NewJob> {
    let new = job(
        &HealthCheckPayload {
            deployment_id,
            chain,
        },
        deployment_id,
        origin,
        key,
    )?
    .with_max_attempts(KindOf::<HealthCheckPayload>::MAX_ATTEMPTS)
    .with_concurrency_key(check_key(deployment_id));
    new.validate_envelope()
        .map_err(|err| invalid(err.to_string()))?;
    Ok(new)
}

/// The deployment's check interval, from its row.
async fn interval_ms(tx: &Transaction<'_>, deployment_id: Uuid) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT health_interval_ms FROM deployments WHERE id = $1",
            &[&deployment_id],
        )
        .await?
        .get(0))
}

/// Enqueues link `link` of the chain one interval from now (database time) and makes
/// it the current one.
async fn enqueue_link(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    link: i64,
    origin: &Origin,
) -> Result<Enqueued> {
    let interval = interval_ms(tx, deployment_id).await?;
    let run_at: DateTime<Utc> = tx
        .query_one(
            "SELECT now() + make_interval(secs => $1::FLOAT8 / 1000)",
            &[&(interval as f64)],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE deployments SET health_chain = $2 WHERE id = $1",
        &[&deployment_id, &link],
    )
    .await?;
    limit_unless_set(tx, &check_key(deployment_id), 1).await?;
    let new = check_job(
        deployment_id,
        Some(link),
        format!("health:{deployment_id}:{link}"),
        origin,
    )?
    .with_run_at(run_at);
    // A chain lasts as long as its deployment: the first link continues the trace of
    // the deploy that started it, each later one starts a trace of its own (so that a
    // deployment's trace ends, and each check is one trace).
    let span = if link > 1 && job_trace::enabled() {
        tracing::info_span!(
            parent: None,
            "health_check.schedule",
            deployment.id = %deployment_id,
            health.link = link,
        )
    } else {
        tracing::Span::none()
    };
    enqueue_one(tx, new).instrument(span).await
}

/// Starts the chain unless a link of it is queued or running: when a deployment
/// becomes `deployed`, and after a check asked for by hand (which revives a chain whose
/// link died).
pub(super) async fn ensure_health_chain(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    origin: &Origin,
) -> Result<Option<Enqueued>> {
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM jobs WHERE group_id = $1 AND kind = $2 AND state = ANY($3)
                 AND payload ? 'chain'",
            &[
                &deployment_id,
                &KindOf::<HealthCheckPayload>::KIND.as_str(),
                &vec![JobState::Queued.as_str(), JobState::Running.as_str()],
            ],
        )
        .await?
        .get(0);
    if live > 0 {
        return Ok(None);
    }
    let current: i64 = tx
        .query_one(
            "SELECT health_chain FROM deployments WHERE id = $1",
            &[&deployment_id],
        )
        .await?
        .get(0);
    Ok(Some(
        enqueue_link(tx, deployment_id, current + 1, origin).await?,
    ))
}

impl DeploymentStore {
    /// What a check looks at: a `deployed` or `degraded` deployment's machines.
    pub async fn health_start(&self, deployment_id: Uuid) -> Result<HealthStart> {
        let Some(row) = self.deployment(deployment_id).await? else {
            return Ok(HealthStart::NotFound);
        };
        if ended(row.state) {
            return Ok(HealthStart::Stop(row.state));
        }
        if !matches!(
            row.state,
            DeploymentState::Deployed | DeploymentState::Degraded
        ) {
            return Ok(HealthStart::Skip(row.state));
        }
        let spec = Spec::from_json(&row.spec)
            .map_err(|err| invalid(format!("stored spec of deployment {deployment_id}: {err}")))?;
        Ok(HealthStart::Check {
            name: row.name,
            spec: Box::new(spec),
            generation: row.generation,
            machines: self.machines(deployment_id).await?,
        })
    }

    /// `lc deploy check`: a check now (it waits for a running one: same key). One asked
    /// for earlier that has not started yet is returned instead of a second one.
    pub async fn request_health_check(
        &self,
        deployment_id: Uuid,
        origin: &Origin,
    ) -> Result<CheckRequest> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(CheckRequest::NotFound);
            };
            if ended(locked.state) {
                return Ok(CheckRequest::NotLive(locked.state));
            }
            let rows = tx
                .query(
                    "SELECT id, state FROM jobs WHERE group_id = $1 AND kind = $2 AND NOT payload ? 'chain'",
                    &[&deployment_id, &KindOf::<HealthCheckPayload>::KIND.as_str()],
                )
                .await?;
            if let Some(waiting) = rows.iter().find(|row| row.get::<_, String>(1) == JobState::Queued.as_str()) {
                return Ok(CheckRequest::Enqueued(Enqueued { id: waiting.get(0), created: false, hint: None }));
            }
            limit_unless_set(tx, &check_key(deployment_id), 1).await?;
            let key = format!("health-now:{deployment_id}:{}", rows.len() + 1);
            let new = check_job(deployment_id, None, key, origin)?;
            Ok(CheckRequest::Enqueued(enqueue_one(tx, new).await?))
        })
    }

    /// Records what check job `check_id` (link `chain`, or one asked for now) found on
    /// generation `generation`, and acts on it: the deployment's state (`degraded`, back
    /// to `deployed`, or `deploying` for a repair), the repair jobs, the health events,
    /// and the chain's next link. A deployment that moved on since the check started
    /// (another state or generation) gets the findings recorded and nothing else.
    pub async fn record_health(
        &self,
        deployment_id: Uuid,
        generation: i64,
        chain: Option<i64>,
        checks: &[NodeCheck],
        origin: &Origin,
    ) -> Result<HealthOutcome> {
        let check_id = origin
            .job_id
            .ok_or_else(|| invalid("a health check records as its job"))?;
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Err(invalid(format!("deployment {deployment_id} vanished")));
            };
            if ended(locked.state) {
                return Ok(HealthOutcome { decision: None, state: locked.state, repairs: vec![], next: None });
            }
            let next = match chain {
                Some(link) => {
                    let current: i64 = tx
                        .query_one("SELECT health_chain FROM deployments WHERE id = $1", &[&deployment_id])
                        .await?
                        .get(0);
                    // An old link (its retry after the next one was written): the chain is there.
                    if current == link {
                        Some(enqueue_link(tx, deployment_id, link + 1, origin).await?)
                    } else {
                        None
                    }
                }
                None => ensure_health_chain(tx, deployment_id, origin).await?,
            };
            if locked.state == DeploymentState::Deploying {
                let state = lost_repair(tx, deployment_id, origin).await?.unwrap_or(locked.state);
                return Ok(HealthOutcome { decision: None, state, repairs: vec![], next });
            }
            let current = matches!(locked.state, DeploymentState::Deployed | DeploymentState::Degraded)
                && locked.generation == generation;
            write_findings(tx, deployment_id, locked.generation, checks, check_id).await?;
            if !current || checks.is_empty() {
                return Ok(HealthOutcome { decision: None, state: locked.state, repairs: vec![], next });
            }
            let policy = locked.spec.health().map_err(|err| invalid(err.to_string()))?;
            let decision = decide(policy.repair, policy.max_unhealthy, locked.spec.node_count(), checks);
            let unhealthy = checks.iter().filter(|check| check.problem.is_some()).count();
            let summary = summary(&decision, unhealthy, checks.len());
            tx.execute(
                "UPDATE deployments SET health_checked_at = now(), health_reason = $2 WHERE id = $1",
                &[&deployment_id, &summary],
            )
            .await?;
            let (state, repairs) = act(tx, deployment_id, &locked, &decision, checks, &summary, origin).await?;
            Ok(HealthOutcome { decision: Some(decision), state, repairs, next })
        })
    }
}

/// A repair whose `provision_machine` job ended without its machine (dead after its
/// lease expired on the last attempt, or cancelled by hand) leaves the deployment
/// `deploying` with the machine `creating` and nothing to finish either: the check
/// that sees it makes the machine and the deployment `failed` (no rollback: the other
/// machines keep running), so `lc deploy show` says why. Returns the new state.
async fn lost_repair(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    origin: &Origin,
) -> Result<Option<DeploymentState>> {
    let lost = tx
        .query_opt(
            "SELECT m.id FROM machines m
             WHERE m.deployment_id = $1 AND m.state = $2
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.group_id = $1 AND j.kind = $3
                               AND j.state = ANY($4) AND (j.payload->>'node')::INT8 = m.node_index)
             ORDER BY m.node_index LIMIT 1",
            &[
                &deployment_id,
                &MachineState::Creating.as_str(),
                &KindOf::<ProvisionMachinePayload>::KIND.as_str(),
                &vec![JobState::Queued.as_str(), JobState::Running.as_str()],
            ],
        )
        .await?;
    let Some(row) = lost else {
        return Ok(None);
    };
    let Some(machine) = machine_in_tx(tx, row.get(0)).await? else {
        return Ok(None);
    };
    let error = "its re-creation (provision_machine) ended without the machine";
    set_machine_state(
        tx,
        &machine,
        &[MachineState::Creating],
        MachineState::Failed,
        Some(error),
        "repair failed",
        origin.job_id,
    )
    .await?;
    let reason = format!("machine {} failed: {error}", machine.name);
    set_state(
        tx,
        deployment_id,
        DeploymentState::Deploying,
        DeploymentState::Failed,
        Some(&reason),
        "repair failed",
        origin.job_id,
    )
    .await?;
    Ok(Some(DeploymentState::Failed))
}

/// One line saying what the check found and did.
fn summary(decision: &Decision, unhealthy: usize, nodes: usize) -> String {
    match decision {
        Decision::Healthy => format!("all {nodes} node(s) healthy"),
        Decision::Degraded { unhealthy, allowed } => format!(
            "{unhealthy} of {nodes} node(s) unhealthy, more than max_unhealthy allows ({allowed}): nothing repaired"
        ),
        Decision::Repair { reprovision } if reprovision.is_empty() => {
            format!(
                "{unhealthy} of {nodes} node(s) unhealthy: repairing (deploy of the current generation)"
            )
        }
        Decision::Repair { reprovision } => format!(
            "{unhealthy} of {nodes} node(s) unhealthy: re-creating {} machine(s), then deploying",
            reprovision.len()
        ),
        Decision::Report(why) => format!("{unhealthy} of {nodes} node(s) unhealthy: {why}"),
    }
}

/// The deployment's state and the repair jobs that follow from the decision.
async fn act(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    locked: &Locked,
    decision: &Decision,
    checks: &[NodeCheck],
    summary: &str,
    origin: &Origin,
) -> Result<(DeploymentState, Vec<Enqueued>)> {
    let check_id = origin.job_id.unwrap_or_default();
    let from = locked.state;
    let mut repairs = Vec::new();
    let state = match decision {
        Decision::Degraded { .. } => DeploymentState::Degraded,
        Decision::Healthy | Decision::Report(_) => DeploymentState::Deployed,
        Decision::Repair { .. } => DeploymentState::Deploying,
    };
    if state != from {
        set_state(
            tx,
            deployment_id,
            from,
            state,
            None,
            summary,
            Some(check_id),
        )
        .await?;
    }
    match decision {
        Decision::Degraded { .. } | Decision::Healthy | Decision::Report(_) => {}
        Decision::Repair { reprovision } => {
            if reprovision.is_empty() {
                let deploy = repair_deploy_job(deployment_id, locked, check_id, origin)?;
                repairs.push(enqueue_one(tx, deploy).await?);
            }
            for node in reprovision {
                let Some(check) = checks.iter().find(|check| check.node == *node) else {
                    continue;
                };
                let Some(machine) = machine_in_tx(tx, check.machine_id).await? else {
                    continue;
                };
                set_machine_state(
                    tx,
                    &machine,
                    &[MachineState::Ready],
                    MachineState::Creating,
                    Some(&check.machine_reason),
                    "gone at the provider: re-creating it",
                    Some(check_id),
                )
                .await?;
                let new = job(
                    &ProvisionMachinePayload {
                        deployment_id,
                        node: *node,
                        repair: Some(check_id),
                    },
                    deployment_id,
                    origin,
                    format!("reprovision:{check_id}:{node}"),
                )?
                .with_max_attempts(locked.spec.max_attempts);
                repairs.push(enqueue_one(tx, with_account_key(new, &locked.spec.provider)?).await?);
            }
        }
    }
    Ok((state, repairs))
}

/// The `deploy` of the current generation that repairs containers (a repair of check
/// job `check_id`: its own idempotency key, apart from the generation's first deploy).
pub(super) fn repair_deploy_job(
    deployment_id: Uuid,
    locked: &Locked,
    check_id: Uuid,
    origin: &Origin,
) -> Result<NewJob> {
    Ok(job(
        &DeployPayload {
            deployment_id,
            generation: locked.generation,
        },
        deployment_id,
        origin,
        format!(
            "deploy:{deployment_id}:{}:repair:{check_id}",
            locked.generation
        ),
    )?
    .with_max_attempts(locked.spec.max_attempts))
}

/// Writes each machine's and container's health, with an event when it changed
/// (subjects `machine_health NAME` and `container_health NAME`: the event types
/// `deployment.machine_health.state_changed` and `deployment.container_health.state_changed`).
async fn write_findings(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    generation: i64,
    checks: &[NodeCheck],
    check_id: Uuid,
) -> Result {
    for check in checks {
        let before = tx
            .query_opt(
                "SELECT health FROM machines WHERE id = $1",
                &[&check.machine_id],
            )
            .await?
            .map(|row| row.get::<_, String>(0));
        tx.execute(
            "UPDATE machines SET health = $2, health_reason = $3, health_checked_at = now() WHERE id = $1",
            &[&check.machine_id, &check.machine_health, &check.machine_reason],
        )
        .await?;
        if let Some(before) = before.filter(|before| before != check.machine_health.as_str()) {
            let subject = format!("machine_health {}", check.machine);
            let to = check.machine_health.as_str();
            event(
                tx,
                deployment_id,
                &subject,
                Some(&before),
                Some(to),
                &check.machine_reason,
                Some(check_id),
            )
            .await?;
        }
        let before = tx
            .query_opt(
                "SELECT health FROM containers WHERE machine_id = $1 AND generation = $2",
                &[&check.machine_id, &generation],
            )
            .await?
            .map(|row| row.get::<_, String>(0));
        tx.execute(
            "UPDATE containers SET health = $3, health_reason = $4, health_checked_at = now()
             WHERE machine_id = $1 AND generation = $2",
            &[
                &check.machine_id,
                &generation,
                &check.container_health,
                &check.container_reason,
            ],
        )
        .await?;
        if let Some(before) = before.filter(|before| before != check.container_health.as_str()) {
            let subject = format!(
                "container_health {}",
                container_name(&check.machine, generation)
            );
            let to = check.container_health.as_str();
            event(
                tx,
                deployment_id,
                &subject,
                Some(&before),
                Some(to),
                &check.container_reason,
                Some(check_id),
            )
            .await?;
        }
    }
    Ok(())
}
