//! SQL of the `deployments`, `machines`, `containers` and `deployment_events` tables.
//!
//! Every state change is a conditional update (the expected state in its `WHERE`)
//! plus an event row, in one transaction that goes through [`retry`]. Changes that
//! decide a deployment's fate (the fan-out, a machine becoming ready and the join, a
//! machine failing for good and the rollback, a teardown request, the steps of a
//! deploy) first lock the deployment row (`SELECT ... FOR UPDATE`), so they run one
//! after the other for the same deployment whatever the isolation level, and enqueue
//! the jobs they imply in the same transaction, with idempotency keys, so a replay
//! after an ambiguous commit makes nothing twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{ContainerState, DeploymentState, MachineState, Spec, container_name, machine_name};
use crate::in_transaction;
use crate::job::{JobKind, NewJob, Priority};
use crate::state::JobState;
use crate::store::{
    Enqueued, Isolation, Replay, Result, Store, StoreError, enqueue_in_transaction, retry,
};

/// Attempts of a `teardown` job: each waits for running provision and deploy jobs,
/// so a few more than other jobs.
pub const TEARDOWN_ATTEMPTS: i64 = 10;

/// A deployment as operators see it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub name: String,
    pub owner: String,
    pub provider: String,
    pub spec: serde_json::Value,
    pub state: String,
    pub generation: i64,
    pub node_count: i64,
    pub deploy_after_provision: bool,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DEPLOYMENT_COLUMNS: &str = "id, name, owner, provider, spec, state, generation, node_count, \
    deploy_after_provision, last_error, created_at, updated_at";

fn deployment_row(row: &Row) -> DeploymentRow {
    DeploymentRow {
        id: row.get(0),
        name: row.get(1),
        owner: row.get(2),
        provider: row.get(3),
        spec: row.get(4),
        state: row.get(5),
        generation: row.get(6),
        node_count: row.get(7),
        deploy_after_provision: row.get(8),
        last_error: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    }
}

/// A deployment with its machine and container counts, for `lc deploy ls`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentSummary {
    #[serde(flatten)]
    pub deployment: DeploymentRow,
    pub machines_ready: i64,
    pub containers_running: i64,
}

/// A machine and where its Docker engine is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MachineRow {
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub node_index: i64,
    pub name: String,
    pub state: String,
    pub driver: Option<String>,
    pub engine_url: Option<String>,
    pub ip_address: Option<String>,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const MACHINE_COLUMNS: &str = "id, deployment_id, node_index, name, state, driver, engine_url, \
    ip_address, ca_cert_path, client_cert_path, client_key_path, last_error, created_at, updated_at";

fn machine_row(row: &Row) -> MachineRow {
    MachineRow {
        id: row.get(0),
        deployment_id: row.get(1),
        node_index: row.get(2),
        name: row.get(3),
        state: row.get(4),
        driver: row.get(5),
        engine_url: row.get(6),
        ip_address: row.get(7),
        ca_cert_path: row.get(8),
        client_cert_path: row.get(9),
        client_key_path: row.get(10),
        last_error: row.get(11),
        created_at: row.get(12),
        updated_at: row.get(13),
    }
}

impl MachineRow {
    /// The recorded engine endpoint, once the machine is ready.
    pub fn endpoint(&self) -> Option<Endpoint> {
        Some(Endpoint {
            url: self.engine_url.clone()?,
            ip_address: self.ip_address.clone(),
            driver: self.driver.clone(),
            ca_cert_path: self.ca_cert_path.clone(),
            client_cert_path: self.client_cert_path.clone(),
            client_key_path: self.client_key_path.clone(),
        })
    }
}

/// Where a machine's Docker engine answers: `unix://` (plain) or `tcp://` (TLS with
/// the machine's certificates).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub url: String,
    pub ip_address: Option<String>,
    pub driver: Option<String>,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
}

/// A payload container.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ContainerRow {
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub machine_id: Uuid,
    pub machine_name: String,
    pub generation: i64,
    pub name: String,
    pub docker_id: Option<String>,
    pub image: String,
    pub state: String,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CONTAINER_SELECT: &str = "SELECT c.id, c.deployment_id, c.machine_id, m.name, c.generation, \
    c.name, c.docker_id, c.image, c.state, c.last_error, c.created_at, c.updated_at \
    FROM containers c JOIN machines m ON m.id = c.machine_id";

fn container_row(row: &Row) -> ContainerRow {
    ContainerRow {
        id: row.get(0),
        deployment_id: row.get(1),
        machine_id: row.get(2),
        machine_name: row.get(3),
        generation: row.get(4),
        name: row.get(5),
        docker_id: row.get(6),
        image: row.get(7),
        state: row.get(8),
        last_error: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    }
}

/// One line of a deployment's history.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentEventRow {
    pub at: DateTime<Utc>,
    pub subject: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub message: Option<String>,
    pub job_id: Option<Uuid>,
}

/// Who asks for a change: the job recorded in events, and the queue and priority of
/// the jobs the change enqueues.
#[derive(Clone, Debug)]
pub struct Origin {
    pub job_id: Option<Uuid>,
    pub queue: String,
    pub priority: Priority,
}

impl Origin {
    pub fn new(job_id: Option<Uuid>, queue: impl Into<String>, priority: Priority) -> Origin {
        Origin {
            job_id,
            queue: queue.into(),
            priority,
        }
    }
}

/// What `create_deployment` did.
#[derive(Clone, Debug)]
pub enum CreateOutcome {
    Created {
        id: Uuid,
        provision: Enqueued,
    },
    /// A live deployment already has this name.
    NameTaken {
        id: Uuid,
        state: String,
    },
}

/// What the `provision` job's fan-out did.
#[derive(Clone, Debug)]
pub enum FanOut {
    Enqueued(Vec<Enqueued>),
    NotProvisioning(DeploymentState),
    NotFound,
}

/// What a `provision_machine` job should do.
#[derive(Clone, Debug)]
pub enum MachineStart {
    /// Create (or adopt) the machine. `fresh` when no earlier attempt got this far (the
    /// machine was `pending`): nothing can exist yet, so the create needs no check first.
    Create {
        machine: MachineRow,
        spec: Box<Spec>,
        deployment_name: String,
        fresh: bool,
    },
    /// An earlier attempt finished it.
    AlreadyReady(MachineRow),
    /// The deployment is no longer provisioning (teardown, failure): make nothing, and
    /// remove the machine if an earlier attempt made it.
    Stop {
        state: DeploymentState,
        machine: Option<MachineRow>,
        spec: Box<Spec>,
    },
    NotFound,
}

/// What recording a ready machine did.
#[derive(Clone, Debug)]
pub enum ReadyOutcome {
    Waiting {
        ready: i64,
        total: i64,
    },
    /// This machine was the last one: the deployment is provisioned (and its deploy
    /// job enqueued when it asked for one).
    Joined {
        deploy: Option<Enqueued>,
    },
    /// Teardown (or a failure) got there first: nothing was recorded and the machine
    /// must be removed by the caller.
    NotProvisioning(DeploymentState),
}

/// What a teardown request did.
#[derive(Clone, Debug)]
pub enum TeardownRequest {
    Requested { job: Enqueued, was: DeploymentState },
    AlreadyTornDown,
    NotFound,
}

/// What a `teardown` job starts from.
#[derive(Clone, Debug)]
pub enum TeardownStart {
    Proceed {
        name: String,
        spec: Box<Spec>,
        machines: Vec<MachineRow>,
        was: DeploymentState,
    },
    NotFound,
}

/// What a `deploy` job should do.
#[derive(Clone, Debug)]
pub enum DeployStart {
    Proceed {
        name: String,
        spec: Box<Spec>,
        machines: Vec<MachineRow>,
    },
    /// A newer spec generation exists; its own deploy job runs it.
    Superseded {
        current: i64,
    },
    Stop(DeploymentState),
    NotFound,
}

/// What `lc deploy update` did.
#[derive(Clone, Debug)]
pub enum UpdateOutcome {
    Updated {
        id: Uuid,
        generation: i64,
        deploy: Enqueued,
    },
    NotFound,
    NotUpdatable {
        state: String,
        reason: String,
    },
}

/// What one run of the provisioning watchdog found.
#[derive(Clone, Debug)]
pub enum WatchOutcome {
    /// The deployment left `provisioning`: the watch ends.
    Done(DeploymentState),
    /// A machine's job ended without the machine (dead by lease expiry, cancelled): the
    /// deployment failed and its rollback is enqueued.
    Failed {
        machine: String,
        teardown: Enqueued,
    },
    /// All good so far; the next watch is enqueued.
    Rescheduled(Enqueued),
    NotFound,
}

/// The deployment row, locked for the rest of the transaction.
pub(super) struct Locked {
    pub(super) name: String,
    pub(super) state: DeploymentState,
    generation: i64,
    deploy_after_provision: bool,
    spec: Spec,
}

fn invalid(message: impl Into<String>) -> StoreError {
    StoreError::Invalid(message.into())
}

pub(super) async fn lock(tx: &Transaction<'_>, id: Uuid) -> Result<Option<Locked>> {
    let Some(row) = tx
        .query_opt(
            "SELECT name, state, generation, deploy_after_provision, spec FROM deployments WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let state: String = row.get(1);
    let spec: serde_json::Value = row.get(4);
    Ok(Some(Locked {
        name: row.get(0),
        state: state.parse().map_err(StoreError::Invalid)?,
        generation: row.get(2),
        deploy_after_provision: row.get(3),
        spec: Spec::from_json(&spec)
            .map_err(|err| invalid(format!("stored spec of deployment {id}: {err}")))?,
    }))
}

pub(super) async fn event(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    subject: &str,
    from: Option<&str>,
    to: Option<&str>,
    message: &str,
    job_id: Option<Uuid>,
) -> Result {
    tx.execute(
        "INSERT INTO deployment_events (deployment_id, subject, from_state, to_state, message, job_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())",
        &[&deployment_id, &subject, &from, &to, &message, &job_id],
    )
    .await?;
    Ok(())
}

/// Moves a locked deployment from `from` to `to` (a change the state machine allows),
/// with its event. Reaching `deployed` clears the last error.
pub(super) async fn set_state(
    tx: &Transaction<'_>,
    id: Uuid,
    from: DeploymentState,
    to: DeploymentState,
    error: Option<&str>,
    message: &str,
    job_id: Option<Uuid>,
) -> Result {
    if !to.reachable_from().contains(&from) {
        return Err(invalid(format!(
            "deployment {id} cannot go from {from} to {to}"
        )));
    }
    let changed = tx
        .execute(
            "UPDATE deployments SET state = $3,
                 last_error = CASE WHEN $3 = 'deployed' THEN NULL ELSE COALESCE($4, last_error) END,
                 updated_at = now()
             WHERE id = $1 AND state = $2",
            &[&id, &from.as_str(), &to.as_str(), &error],
        )
        .await?;
    if changed != 1 {
        return Err(invalid(format!("deployment {id} was not {from} any more")));
    }
    let message = match error {
        Some(error) => format!("{message}: {error}"),
        None => message.to_owned(),
    };
    event(
        tx,
        id,
        "deployment",
        Some(from.as_str()),
        Some(to.as_str()),
        &message,
        job_id,
    )
    .await
}

pub(super) async fn machine_in_tx(
    tx: &Transaction<'_>,
    machine_id: Uuid,
) -> Result<Option<MachineRow>> {
    let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE id = $1");
    Ok(tx
        .query_opt(sql.as_str(), &[&machine_id])
        .await?
        .as_ref()
        .map(machine_row))
}

async fn machines_in_tx(tx: &Transaction<'_>, deployment_id: Uuid) -> Result<Vec<MachineRow>> {
    let sql = format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 ORDER BY node_index"
    );
    Ok(tx
        .query(sql.as_str(), &[&deployment_id])
        .await?
        .iter()
        .map(machine_row)
        .collect())
}

/// Moves a machine from one of `from` to `to`, with its event; false when the machine
/// was in another state (nothing written).
pub(super) async fn set_machine_state(
    tx: &Transaction<'_>,
    machine: &MachineRow,
    from: &[MachineState],
    to: MachineState,
    error: Option<&str>,
    message: &str,
    job_id: Option<Uuid>,
) -> Result<bool> {
    let from: Vec<&str> = from.iter().map(|state| state.as_str()).collect();
    if !from.contains(&machine.state.as_str()) {
        return Ok(false);
    }
    let changed = tx
        .execute(
            "UPDATE machines SET state = $2, last_error = COALESCE($4, last_error), updated_at = now()
             WHERE id = $1 AND state = $3",
            &[&machine.id, &to.as_str(), &machine.state, &error],
        )
        .await?;
    if changed == 1 && machine.state != to.as_str() {
        let message = match error {
            Some(error) => format!("{message}: {error}"),
            None => message.to_owned(),
        };
        event(
            tx,
            machine.deployment_id,
            &format!("machine {}", machine.name),
            Some(&machine.state),
            Some(to.as_str()),
            &message,
            job_id,
        )
        .await?;
    }
    Ok(changed == 1)
}

fn job(
    kind: JobKind,
    payload: serde_json::Value,
    deployment_id: Uuid,
    origin: &Origin,
    key: String,
) -> Result<NewJob> {
    let job = NewJob::new(kind, payload)
        .with_deployment(deployment_id)
        .with_queue(origin.queue.clone())
        .with_priority(origin.priority)
        .with_idempotency_key(key);
    job.validate().map_err(|err| invalid(err.to_string()))?;
    Ok(job)
}

async fn enqueue_one(tx: &Transaction<'_>, job: NewJob) -> Result<Enqueued> {
    enqueue_in_transaction(tx, std::slice::from_ref(&job))
        .await?
        .pop()
        .ok_or_else(|| invalid("enqueue returned no job"))
}

/// The live teardown job of a deployment, or a new one (`teardown:<id>:<n>`).
async fn ensure_teardown(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    reason: &str,
    origin: &Origin,
) -> Result<Enqueued> {
    let rows = tx
        .query(
            "SELECT id, state FROM jobs WHERE deployment_id = $1 AND kind = $2",
            &[&deployment_id, &JobKind::Teardown.as_str()],
        )
        .await?;
    for row in &rows {
        let state: String = row.get(1);
        if state == JobState::Queued.as_str() || state == JobState::Running.as_str() {
            return Ok(Enqueued {
                id: row.get(0),
                created: false,
                hint: None,
            });
        }
    }
    let reason = super::truncate_text(reason, 900);
    let new = job(
        JobKind::Teardown,
        serde_json::json!({ "deployment_id": deployment_id, "reason": reason }),
        deployment_id,
        origin,
        format!("teardown:{deployment_id}:{}", rows.len() + 1),
    )?
    .with_max_attempts(TEARDOWN_ATTEMPTS);
    enqueue_one(tx, new).await
}

fn deploy_job(
    deployment_id: Uuid,
    generation: i64,
    max_attempts: i64,
    origin: &Origin,
) -> Result<NewJob> {
    Ok(job(
        JobKind::Deploy,
        serde_json::json!({ "deployment_id": deployment_id, "generation": generation }),
        deployment_id,
        origin,
        format!("deploy:{deployment_id}:{generation}"),
    )?
    .with_max_attempts(max_attempts))
}

fn watch_job(
    deployment_id: Uuid,
    watch: i64,
    interval: Duration,
    origin: &Origin,
) -> Result<NewJob> {
    let run_at =
        Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::seconds(30));
    Ok(job(
        JobKind::Provision,
        serde_json::json!({ "deployment_id": deployment_id, "watch": watch }),
        deployment_id,
        origin,
        format!("provision-watch:{deployment_id}:{watch}"),
    )?
    .with_run_at(run_at))
}

impl Store {
    /// Writes a new deployment (state `provisioning`) and enqueues its `provision` job,
    /// in one transaction. The spec must be validated already.
    pub async fn create_deployment(
        &self,
        spec: &Spec,
        deploy_after_provision: bool,
        origin: &Origin,
    ) -> Result<CreateOutcome> {
        let id = Uuid::new_v4();
        let spec_json = spec.to_json();
        let provision = job(
            JobKind::Provision,
            serde_json::json!({ "deployment_id": id }),
            id,
            origin,
            format!("provision:{id}"),
        )?;
        let provider = spec.provider.kind();
        let node_count = spec.node_count();
        let initial = DeploymentState::Provisioning.as_str();
        // The id is chosen before the first try, so a replay after an ambiguous commit
        // finds its own row instead of reporting the name as taken.
        in_transaction!(self, Isolation::Serializable, tx => {
            let inserted = tx
                .execute(
                    "INSERT INTO deployments (id, name, owner, provider, spec, state, generation, node_count, deploy_after_provision)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) ON CONFLICT DO NOTHING",
                    &[&id, &spec.name, &spec.owner, &provider, &spec_json, &initial, &node_count, &deploy_after_provision],
                )
                .await?;
            if inserted == 0 {
                let ours = tx.query_opt("SELECT 1 FROM deployments WHERE id = $1", &[&id]).await?;
                if ours.is_none() {
                    let existing = tx
                        .query_opt(
                            "SELECT id, state FROM deployments WHERE name = $1 AND state <> $2",
                            &[&spec.name, &DeploymentState::TornDown.as_str()],
                        )
                        .await?;
                    return match existing {
                        Some(row) => Ok(CreateOutcome::NameTaken { id: row.get(0), state: row.get(1) }),
                        None => Err(invalid(format!("deployment {:?} could not be written", spec.name))),
                    };
                }
            } else {
                let message = format!(
                    "created by {} ({} node(s), provider {provider}{})",
                    spec.owner,
                    node_count,
                    if deploy_after_provision { ", deploy after provisioning" } else { "" }
                );
                event(tx, id, "deployment", None, Some(initial), &message, origin.job_id).await?;
            }
            let provision = enqueue_one(tx, provision.clone()).await?;
            Ok(CreateOutcome::Created { id, provision })
        })
    }

    /// The `provision` job's fan-out: one machine row and one `provision_machine` job
    /// per node (`provision:<id>:<generation>:<n>`), plus the provisioning watchdog,
    /// all in the transaction that checks the deployment is still provisioning.
    pub async fn fan_out_provision(
        &self,
        deployment_id: Uuid,
        origin: &Origin,
        watch_interval: Duration,
    ) -> Result<FanOut> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(FanOut::NotFound);
            };
            if locked.state != DeploymentState::Provisioning {
                return Ok(FanOut::NotProvisioning(locked.state));
            }
            let count = locked.spec.node_count();
            let nodes: Vec<i64> = (1..=count).collect();
            let names: Vec<String> = nodes.iter().map(|node| machine_name(&locked.name, *node)).collect();
            let driver = match &locked.spec.provider {
                super::Provider::Local {} => None,
                super::Provider::DockerMachine { driver, .. } => Some(driver.clone()),
            };
            let created = tx
                .query(
                    "INSERT INTO machines (deployment_id, node_index, name, state, driver)
                     SELECT $1, node, name, $4, $5 FROM UNNEST($2::INT8[], $3::TEXT[]) AS t(node, name)
                     ON CONFLICT (deployment_id, node_index) DO NOTHING
                     RETURNING name",
                    &[&deployment_id, &nodes, &names, &MachineState::Pending.as_str(), &driver],
                )
                .await?;
            let created: Vec<String> = created.iter().map(|row| format!("machine {}", row.get::<_, String>(0))).collect();
            tx.execute(
                "INSERT INTO deployment_events (deployment_id, subject, to_state, message, job_id, at)
                 SELECT $1, subject, $2, 'provisioning requested', $3, clock_timestamp() FROM UNNEST($4::TEXT[]) AS t(subject)",
                &[&deployment_id, &MachineState::Pending.as_str(), &origin.job_id, &created],
            )
            .await?;
            let mut jobs = Vec::with_capacity(nodes.len() + 1);
            for node in &nodes {
                jobs.push(
                    job(
                        JobKind::ProvisionMachine,
                        serde_json::json!({ "deployment_id": deployment_id, "node": node }),
                        deployment_id,
                        origin,
                        format!("provision:{deployment_id}:{}:{node}", locked.generation),
                    )?
                    .with_max_attempts(locked.spec.max_attempts),
                );
            }
            jobs.push(watch_job(deployment_id, 1, watch_interval, origin)?);
            let enqueued = enqueue_in_transaction(tx, &jobs).await?;
            Ok(FanOut::Enqueued(enqueued))
        })
    }

    /// Starts a `provision_machine` attempt: checks the deployment is provisioning and
    /// moves the machine to `creating`.
    pub async fn begin_machine(
        &self,
        deployment_id: Uuid,
        node: i64,
        job_id: Uuid,
    ) -> Result<MachineStart> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(MachineStart::NotFound);
            };
            let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 AND node_index = $2");
            let machine = tx.query_opt(sql.as_str(), &[&deployment_id, &node]).await?.as_ref().map(machine_row);
            if locked.state != DeploymentState::Provisioning {
                return Ok(MachineStart::Stop { state: locked.state, machine, spec: Box::new(locked.spec) });
            }
            let Some(machine) = machine else {
                return Ok(MachineStart::NotFound);
            };
            let outcome = match machine.state.parse::<MachineState>().map_err(StoreError::Invalid)? {
                MachineState::Ready => MachineStart::AlreadyReady(machine),
                state @ (MachineState::Pending | MachineState::Creating) => {
                    set_machine_state(
                        tx,
                        &machine,
                        &[MachineState::Pending, MachineState::Creating],
                        MachineState::Creating,
                        None,
                        "creating",
                        Some(job_id),
                    )
                    .await?;
                    MachineStart::Create {
                        machine,
                        spec: Box::new(locked.spec),
                        deployment_name: locked.name,
                        fresh: state == MachineState::Pending,
                    }
                }
                MachineState::Failed
                | MachineState::Removing
                | MachineState::Removed
                | MachineState::Abandoned => {
                    MachineStart::Stop { state: locked.state, machine: Some(machine), spec: Box::new(locked.spec) }
                }
            };
            Ok(outcome)
        })
    }

    /// Records a machine as ready with its engine endpoint and, in the same
    /// transaction, the join: when every machine of the deployment is ready, the
    /// deployment becomes `provisioned` and (if asked) its `deploy` job is enqueued.
    pub async fn machine_ready(
        &self,
        deployment_id: Uuid,
        machine_id: Uuid,
        endpoint: &Endpoint,
        entry: Option<&[u8]>,
        fence: super::Fence,
        origin: &Origin,
    ) -> Result<ReadyOutcome> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Err(invalid(format!("deployment {deployment_id} vanished")));
            };
            if locked.state != DeploymentState::Provisioning {
                return Ok(ReadyOutcome::NotProvisioning(locked.state));
            }
            let machine = machine_in_tx(tx, machine_id)
                .await?
                .ok_or_else(|| invalid(format!("machine {machine_id} vanished")))?;
            if machine.state != MachineState::Ready.as_str() {
                // Fenced: an attempt that lost its job records nothing.
                let recorded = tx
                    .execute(
                        "UPDATE machines SET engine_url = $2, ip_address = $3, driver = COALESCE($4, driver),
                             ca_cert_path = $5, client_cert_path = $6, client_key_path = $7, last_error = NULL,
                             store_entry = COALESCE($9, store_entry)
                         WHERE id = $1 AND state = $8
                           AND EXISTS (SELECT 1 FROM jobs WHERE id = $10 AND attempt = $11 AND state = $12)",
                        &[
                            &machine_id,
                            &endpoint.url,
                            &endpoint.ip_address,
                            &endpoint.driver,
                            &endpoint.ca_cert_path,
                            &endpoint.client_cert_path,
                            &endpoint.client_key_path,
                            &machine.state,
                            &entry,
                            &fence.job_id,
                            &fence.attempt,
                            &JobState::Running.as_str(),
                        ],
                    )
                    .await?;
                if recorded != 1 {
                    return Err(invalid(format!(
                        "machine {} was not recorded: attempt {} no longer holds job {}",
                        machine.name, fence.attempt, fence.job_id
                    )));
                }
                let message = format!("engine {} (ip {})", endpoint.url, endpoint.ip_address.as_deref().unwrap_or("-"));
                let changed = set_machine_state(
                    tx,
                    &machine,
                    &[MachineState::Pending, MachineState::Creating],
                    MachineState::Ready,
                    None,
                    &message,
                    origin.job_id,
                )
                .await?;
                if !changed {
                    return Err(invalid(format!("machine {} is {}, not creating", machine.name, machine.state)));
                }
            }
            let counts = tx
                .query_one(
                    "SELECT count(*) FILTER (WHERE state = $2), count(*) FROM machines WHERE deployment_id = $1",
                    &[&deployment_id, &MachineState::Ready.as_str()],
                )
                .await?;
            let (ready, total): (i64, i64) = (counts.get(0), counts.get(1));
            let outcome = if ready == total && total == locked.spec.node_count() {
                set_state(
                    tx,
                    deployment_id,
                    DeploymentState::Provisioning,
                    DeploymentState::Provisioned,
                    None,
                    &format!("all {total} machine(s) ready"),
                    origin.job_id,
                )
                .await?;
                let deploy = if locked.deploy_after_provision {
                    let new = deploy_job(deployment_id, locked.generation, locked.spec.max_attempts, origin)?;
                    Some(enqueue_one(tx, new).await?)
                } else {
                    None
                };
                ReadyOutcome::Joined { deploy }
            } else {
                ReadyOutcome::Waiting { ready, total }
            };
            Ok(outcome)
        })
    }

    /// A machine failed for good: the machine and the deployment become `failed` and a
    /// rollback teardown is enqueued, in one transaction. Returns the teardown job
    /// (none when a teardown already finished or is under way by request).
    pub async fn machine_failed(
        &self,
        deployment_id: Uuid,
        machine_id: Uuid,
        error: &str,
        origin: &Origin,
    ) -> Result<Option<Enqueued>> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(None);
            };
            let machine = machine_in_tx(tx, machine_id)
                .await?
                .ok_or_else(|| invalid(format!("machine {machine_id} vanished")))?;
            set_machine_state(
                tx,
                &machine,
                &[MachineState::Pending, MachineState::Creating],
                MachineState::Failed,
                Some(error),
                "failed for good",
                origin.job_id,
            )
            .await?;
            let reason = format!("machine {} failed: {error}", machine.name);
            let teardown = match locked.state {
                DeploymentState::Failed => Some(
                    ensure_teardown(tx, deployment_id, &format!("rollback: {reason}"), origin)
                        .await?,
                ),
                state if DeploymentState::Failed.reachable_from().contains(&state) => {
                    set_state(
                        tx,
                        deployment_id,
                        state,
                        DeploymentState::Failed,
                        Some(&reason),
                        "failed",
                        origin.job_id,
                    )
                    .await?;
                    Some(
                        ensure_teardown(tx, deployment_id, &format!("rollback: {reason}"), origin)
                            .await?,
                    )
                }
                // Tearing down already, or past provisioning: nothing to roll back here.
                _ => None,
            };
            Ok(teardown)
        })
    }

    /// Notes a machine's latest error without changing its state (a retryable failure).
    pub async fn machine_error(&self, machine_id: Uuid, error: &str) -> Result {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE machines SET last_error = $2, updated_at = now() WHERE id = $1",
                    &[&machine_id, &error],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The provisioning watchdog: while the deployment is provisioning, a machine whose
    /// `provision_machine` job ended (dead after its lease expired on the last attempt,
    /// or cancelled) without the machine being ready fails the deployment and enqueues
    /// the rollback; otherwise the next watch is enqueued `interval` later.
    pub async fn provision_watch(
        &self,
        deployment_id: Uuid,
        watch: i64,
        interval: Duration,
        origin: &Origin,
    ) -> Result<WatchOutcome> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(WatchOutcome::NotFound);
            };
            if locked.state != DeploymentState::Provisioning {
                return Ok(WatchOutcome::Done(locked.state));
            }
            let lost = tx
                .query_opt(
                    "SELECT m.id, j.id, j.state, j.last_error
                     FROM jobs j JOIN machines m
                       ON m.deployment_id = j.deployment_id AND m.node_index = (j.payload->>'node')::INT8
                     WHERE j.deployment_id = $1 AND j.kind = $2 AND j.state = ANY($3) AND m.state <> $4
                     ORDER BY m.node_index LIMIT 1",
                    &[
                        &deployment_id,
                        &JobKind::ProvisionMachine.as_str(),
                        &vec![JobState::Dead.as_str(), JobState::Cancelled.as_str()],
                        &MachineState::Ready.as_str(),
                    ],
                )
                .await?;
            let outcome = if let Some(row) = lost {
                let machine = machine_in_tx(tx, row.get(0))
                    .await?
                    .ok_or_else(|| invalid("machine vanished"))?;
                let job_id: Uuid = row.get(1);
                let job_state: String = row.get(2);
                let last_error: Option<String> = row.get(3);
                let error = format!(
                    "its provision_machine job {job_id} is {job_state}: {}",
                    last_error.as_deref().unwrap_or("no error recorded")
                );
                set_machine_state(
                    tx,
                    &machine,
                    &[MachineState::Pending, MachineState::Creating],
                    MachineState::Failed,
                    Some(&error),
                    "failed for good",
                    origin.job_id,
                )
                .await?;
                let reason = format!("machine {} failed: {error}", machine.name);
                set_state(tx, deployment_id, locked.state, DeploymentState::Failed, Some(&reason), "failed", origin.job_id)
                    .await?;
                let teardown = ensure_teardown(tx, deployment_id, &format!("rollback: {reason}"), origin).await?;
                WatchOutcome::Failed { machine: machine.name, teardown }
            } else {
                WatchOutcome::Rescheduled(enqueue_one(tx, watch_job(deployment_id, watch + 1, interval, origin)?).await?)
            };
            Ok(outcome)
        })
    }

    /// Asks for a teardown: the deployment becomes `tearing_down` at once (which stops
    /// provisioning and deploying from making anything new) and a teardown job is
    /// enqueued unless one is queued or running already.
    pub async fn request_teardown(
        &self,
        deployment_id: Uuid,
        reason: &str,
        origin: &Origin,
    ) -> Result<TeardownRequest> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(TeardownRequest::NotFound);
            };
            if locked.state == DeploymentState::TornDown {
                return Ok(TeardownRequest::AlreadyTornDown);
            }
            if locked.state != DeploymentState::TearingDown {
                set_state(
                    tx,
                    deployment_id,
                    locked.state,
                    DeploymentState::TearingDown,
                    None,
                    reason,
                    origin.job_id,
                )
                .await?;
            }
            let job = ensure_teardown(tx, deployment_id, reason, origin).await?;
            Ok(TeardownRequest::Requested {
                job,
                was: locked.state,
            })
        })
    }

    /// Starts a teardown attempt: the deployment becomes `tearing_down` (unless it is
    /// already torn down: then the attempt only checks that nothing is left).
    pub async fn begin_teardown(
        &self,
        deployment_id: Uuid,
        reason: &str,
        job_id: Uuid,
    ) -> Result<TeardownStart> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(TeardownStart::NotFound);
            };
            if !matches!(
                locked.state,
                DeploymentState::TearingDown | DeploymentState::TornDown
            ) {
                set_state(
                    tx,
                    deployment_id,
                    locked.state,
                    DeploymentState::TearingDown,
                    None,
                    reason,
                    Some(job_id),
                )
                .await?;
            }
            let machines = machines_in_tx(tx, deployment_id).await?;
            Ok(TeardownStart::Proceed {
                name: locked.name,
                spec: Box::new(locked.spec),
                machines,
                was: locked.state,
            })
        })
    }

    /// Moves a machine to `to` from any of `from`, with its event.
    pub async fn set_machine(
        &self,
        machine_id: Uuid,
        from: &[MachineState],
        to: MachineState,
        message: &str,
        job_id: Option<Uuid>,
    ) -> Result<bool> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(machine) = machine_in_tx(tx, machine_id).await? else {
                return Ok(false);
            };
            let changed = set_machine_state(tx, &machine, from, to, None, message, job_id).await?;
            Ok(changed)
        })
    }

    /// Ends a teardown: every container row `removed`, every machine row `removed`
    /// (but those `abandoned` on the way), and the deployment `torn_down`, or
    /// `leftovers` when a machine was abandoned (its cloud resource may still exist:
    /// `lc stuck` lists the deployment until an operator acknowledges it). Returns the
    /// state reached; `None` when the deployment was not tearing down.
    pub async fn finish_teardown(
        &self,
        deployment_id: Uuid,
        job_id: Uuid,
    ) -> Result<Option<DeploymentState>> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(None);
            };
            if locked.state != DeploymentState::TearingDown {
                return Ok(None);
            }
            let removed = ContainerState::Removed.as_str();
            tx.execute(
                "WITH gone AS (
                     UPDATE containers SET state = $2, updated_at = now()
                     WHERE deployment_id = $1 AND state <> $2
                     RETURNING name, state
                 )
                 INSERT INTO deployment_events (deployment_id, subject, to_state, message, job_id, at)
                 SELECT $1, 'container ' || name, $2, 'removed by teardown', $3, clock_timestamp() FROM gone",
                &[&deployment_id, &removed, &Some(job_id)],
            )
            .await?;
            let mut abandoned = Vec::new();
            for machine in machines_in_tx(tx, deployment_id).await? {
                if machine.state == MachineState::Abandoned.as_str() {
                    abandoned.push(machine.name.clone());
                    continue;
                }
                set_machine_state(
                    tx,
                    &machine,
                    &MachineState::Removed.reachable_from(),
                    MachineState::Removed,
                    None,
                    "removed by teardown",
                    Some(job_id),
                )
                .await?;
                tx.execute("UPDATE machines SET store_entry = NULL WHERE id = $1", &[&machine.id])
                    .await?;
            }
            let to = if abandoned.is_empty() {
                set_state(tx, deployment_id, locked.state, DeploymentState::TornDown, None, "nothing left", Some(job_id))
                    .await?;
                super::records::drop_keys(tx, deployment_id).await?;
                DeploymentState::TornDown
            } else {
                let message = format!(
                    "teardown done but machine(s) {} could not be confirmed removed: check the provider, then `lc deploy ack`",
                    abandoned.join(", ")
                );
                set_state(tx, deployment_id, locked.state, DeploymentState::Leftovers, None, &message, Some(job_id))
                    .await?;
                DeploymentState::Leftovers
            };
            Ok(Some(to))
        })
    }

    /// Cancels the queued jobs of these kinds of a deployment (a running one is left to
    /// finish: it sees the deployment's new state itself). One conditional statement
    /// with its event rows, following the job state machine's `cancel` transition.
    pub async fn cancel_queued_jobs(
        &self,
        deployment_id: Uuid,
        kinds: &[JobKind],
        reason: &str,
    ) -> Result<Vec<Uuid>> {
        const SQL: &str = "
WITH cancelled AS (
    UPDATE jobs SET state = $3, finished_at = now(), updated_at = now(),
        last_error = COALESCE(last_error, $4)
    WHERE deployment_id = $1 AND kind = ANY($2) AND state = $5
    RETURNING id, attempt
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, $5, $3, attempt, $6 FROM cancelled
)
SELECT id FROM cancelled";
        use crate::state::Transition;
        debug_assert!(Transition::Cancel.from().contains(&JobState::Queued));
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let to = Transition::Cancel.to().as_str();
        let queued = JobState::Queued.as_str();
        let label = format!("{}: {reason}", Transition::Cancel.label());
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let rows = client
                .query(
                    SQL,
                    &[&deployment_id, &kinds, &to, &reason, &queued, &label],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// Running jobs of these kinds of a deployment, other than `except`: (id, kind).
    pub async fn running_deployment_jobs(
        &self,
        deployment_id: Uuid,
        kinds: &[JobKind],
        except: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, kind FROM jobs WHERE deployment_id = $1 AND kind = ANY($2) AND state = $3 AND id <> $4",
                    &[&deployment_id, &kinds, &JobState::Running.as_str(), &except],
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }

    /// Starts a `deploy` attempt: the deployment becomes `deploying` when it is
    /// provisioned or deployed and the job's generation is current.
    pub async fn begin_deploy(
        &self,
        deployment_id: Uuid,
        generation: i64,
        job_id: Uuid,
    ) -> Result<DeployStart> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(DeployStart::NotFound);
            };
            if locked.generation != generation {
                return Ok(DeployStart::Superseded {
                    current: locked.generation,
                });
            }
            if !matches!(
                locked.state,
                DeploymentState::Provisioned
                    | DeploymentState::Deploying
                    | DeploymentState::Deployed
            ) {
                return Ok(DeployStart::Stop(locked.state));
            }
            let machines = machines_in_tx(tx, deployment_id).await?;
            if machines
                .iter()
                .any(|machine| machine.state != MachineState::Ready.as_str())
            {
                return Err(invalid(format!(
                    "deployment {} is {} but not all its machines are ready",
                    locked.name, locked.state
                )));
            }
            if locked.state != DeploymentState::Deploying {
                set_state(
                    tx,
                    deployment_id,
                    locked.state,
                    DeploymentState::Deploying,
                    None,
                    &format!("deploying generation {generation}"),
                    Some(job_id),
                )
                .await?;
            }
            Ok(DeployStart::Proceed {
                name: locked.name,
                spec: Box::new(locked.spec),
                machines,
            })
        })
    }

    /// The deployment's state and spec generation right now.
    pub async fn deployment_state(
        &self,
        deployment_id: Uuid,
    ) -> Result<Option<(DeploymentState, i64)>> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let Some(row) = client
                .query_opt(
                    "SELECT state, generation FROM deployments WHERE id = $1",
                    &[&deployment_id],
                )
                .await?
            else {
                return Ok(None);
            };
            let state: String = row.get(0);
            Ok(Some((
                state.parse().map_err(StoreError::Invalid)?,
                row.get(1),
            )))
        })
        .await
    }

    /// Ends a deploy: `deploying` → `deployed` (or `failed` with `error`), only while
    /// the generation is still current.
    pub async fn finish_deploy(
        &self,
        deployment_id: Uuid,
        generation: i64,
        error: Option<&str>,
        job_id: Uuid,
    ) -> Result<bool> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(false);
            };
            if locked.state != DeploymentState::Deploying || locked.generation != generation {
                return Ok(false);
            }
            match error {
                None => {
                    set_state(
                        tx,
                        deployment_id,
                        locked.state,
                        DeploymentState::Deployed,
                        None,
                        &format!("generation {generation} running on every machine"),
                        Some(job_id),
                    )
                    .await?
                }
                Some(error) => {
                    set_state(
                        tx,
                        deployment_id,
                        locked.state,
                        DeploymentState::Failed,
                        Some(error),
                        "deploy failed",
                        Some(job_id),
                    )
                    .await?
                }
            }
            Ok(true)
        })
    }

    /// Records a container's state (creating, running, failed, removed) for one machine
    /// and generation, inserting its row the first time; an event when it changes.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_container(
        &self,
        machine: &MachineRow,
        generation: i64,
        image: &str,
        to: ContainerState,
        docker_id: Option<&str>,
        error: Option<&str>,
        job_id: Uuid,
    ) -> Result {
        let name = container_name(&machine.name, generation);
        in_transaction!(self, Isolation::Serializable, tx => {
            let inserted = tx
                .execute(
                    "INSERT INTO containers (deployment_id, machine_id, generation, name, image, state)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (machine_id, generation) DO NOTHING",
                    &[&machine.deployment_id, &machine.id, &generation, &name, &image, &ContainerState::Creating.as_str()],
                )
                .await?;
            if inserted == 1 {
                let message = format!("on machine {}, image {image}", machine.name);
                event(tx, machine.deployment_id, &format!("container {name}"), None, Some(ContainerState::Creating.as_str()), &message, Some(job_id))
                    .await?;
            }
            let row = tx
                .query_one(
                    "SELECT state FROM containers WHERE machine_id = $1 AND generation = $2 FOR UPDATE",
                    &[&machine.id, &generation],
                )
                .await?;
            let from: String = row.get(0);
            tx.execute(
                "UPDATE containers SET state = $3, docker_id = COALESCE($4, docker_id), image = $5,
                     last_error = CASE WHEN $3 = 'running' THEN NULL ELSE COALESCE($6, last_error) END,
                     updated_at = now()
                 WHERE machine_id = $1 AND generation = $2 AND state = $7",
                &[&machine.id, &generation, &to.as_str(), &docker_id, &image, &error, &from],
            )
            .await?;
            if from != to.as_str() {
                let message = match (docker_id, error) {
                    (_, Some(error)) => error.to_owned(),
                    (Some(id), None) => format!("docker id {}", &id[..id.len().min(12)]),
                    (None, None) => String::new(),
                };
                event(
                    tx,
                    machine.deployment_id,
                    &format!("container {name}"),
                    Some(&from),
                    Some(to.as_str()),
                    &message,
                    Some(job_id),
                )
                .await?;
            }
            Ok(())
        })
    }

    /// Marks the containers of older generations on a machine removed (a rolling
    /// update replaced them).
    pub async fn containers_replaced(
        &self,
        machine: &MachineRow,
        current: i64,
        job_id: Uuid,
    ) -> Result {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            client
                .execute(
                    "WITH gone AS (
                         UPDATE containers SET state = $3, updated_at = now()
                         WHERE machine_id = $1 AND generation <> $2 AND state <> $3
                         RETURNING name, state
                     )
                     INSERT INTO deployment_events (deployment_id, subject, to_state, message, job_id, at)
                     SELECT $4, 'container ' || name, $3, 'replaced by generation ' || $2::TEXT, $5, clock_timestamp() FROM gone",
                    &[&machine.id, &current, &ContainerState::Removed.as_str(), &machine.deployment_id, &job_id],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores a new spec (same nodes and provider) as the next generation and enqueues
    /// its `deploy` job, which replaces the containers one machine at a time.
    pub async fn update_deployment(&self, spec: &Spec, origin: &Origin) -> Result<UpdateOutcome> {
        let spec_json = spec.to_json();
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(row) = tx
                .query_opt(
                    "SELECT id FROM deployments WHERE name = $1 AND state <> $2",
                    &[&spec.name, &DeploymentState::TornDown.as_str()],
                )
                .await?
            else {
                return Ok(UpdateOutcome::NotFound);
            };
            let id: Uuid = row.get(0);
            let Some(locked) = lock(tx, id).await? else {
                return Ok(UpdateOutcome::NotFound);
            };
            let refuse = |reason: &str| -> Result<UpdateOutcome> {
                Ok(UpdateOutcome::NotUpdatable { state: locked.state.to_string(), reason: reason.to_owned() })
            };
            if locked.spec.node_count() != spec.node_count() || locked.spec.provider != spec.provider {
                return refuse("an update may change the payload and timeouts only; changing nodes or the provider needs a new deployment");
            }
            if spec.owner != locked.spec.owner {
                return refuse("an update may not change the owner");
            }
            if !matches!(
                locked.state,
                DeploymentState::Provisioned | DeploymentState::Deployed | DeploymentState::Deploying | DeploymentState::Failed
            ) {
                return refuse("only provisioned, deployed or failed deployments can be updated");
            }
            let machines = machines_in_tx(tx, id).await?;
            if machines.len() as i64 != spec.node_count()
                || machines.iter().any(|machine| machine.state != MachineState::Ready.as_str())
            {
                return refuse("not every machine is ready");
            }
            let live_deploys: i64 = tx
                .query_one(
                    "SELECT count(*) FROM jobs WHERE deployment_id = $1 AND kind = $2 AND state = ANY($3)",
                    &[&id, &JobKind::Deploy.as_str(), &vec![JobState::Queued.as_str(), JobState::Running.as_str()]],
                )
                .await?
                .get(0);
            // A deploy still marked running while the deployment is deployed (or failed)
            // has done its work and is only recording its outcome.
            if live_deploys > 0 && locked.state == DeploymentState::Deploying {
                return refuse("a deploy is queued or running; wait for it to finish");
            }
            let generation = locked.generation + 1;
            tx.execute(
                "UPDATE deployments SET spec = $2, generation = $3, updated_at = now() WHERE id = $1 AND generation = $4",
                &[&id, &spec_json, &generation, &locked.generation],
            )
            .await?;
            if locked.state != DeploymentState::Deploying {
                set_state(
                    tx,
                    id,
                    locked.state,
                    DeploymentState::Deploying,
                    None,
                    &format!("spec updated to generation {generation}"),
                    origin.job_id,
                )
                .await?;
            }
            let deploy = enqueue_one(tx, deploy_job(id, generation, spec.max_attempts, origin)?).await?;
            Ok(UpdateOutcome::Updated { id, generation, deploy })
        })
    }

    pub async fn deployment(&self, id: Uuid) -> Result<Option<DeploymentRow>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client
                .query_opt(sql.as_str(), &[&id])
                .await?
                .as_ref()
                .map(deployment_row))
        })
        .await
    }

    /// Deployments, newest first; torn down ones only with `all`.
    pub async fn list_deployments(&self, all: bool, limit: i64) -> Result<Vec<DeploymentSummary>> {
        let columns: Vec<String> = DEPLOYMENT_COLUMNS
            .split(", ")
            .map(|column| format!("d.{column}"))
            .collect();
        let sql = format!(
            "SELECT {},
                    (SELECT count(*) FROM machines m WHERE m.deployment_id = d.id AND m.state = 'ready'),
                    (SELECT count(*) FROM containers c WHERE c.deployment_id = d.id AND c.state = 'running')
             FROM deployments d WHERE ($1 OR d.state <> 'torn_down')
             ORDER BY d.created_at DESC LIMIT $2",
            columns.join(", ")
        );
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let rows = client.query(sql.as_str(), &[&all, &limit]).await?;
            Ok(rows
                .iter()
                .map(|row| DeploymentSummary {
                    deployment: deployment_row(row),
                    machines_ready: row.get(12),
                    containers_running: row.get(13),
                })
                .collect())
        })
        .await
    }

    pub async fn machines(&self, deployment_id: Uuid) -> Result<Vec<MachineRow>> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 ORDER BY node_index"
        );
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client
                .query(sql.as_str(), &[&deployment_id])
                .await?
                .iter()
                .map(machine_row)
                .collect())
        })
        .await
    }

    pub async fn containers(&self, deployment_id: Uuid) -> Result<Vec<ContainerRow>> {
        let sql = format!(
            "{CONTAINER_SELECT} WHERE c.deployment_id = $1 ORDER BY m.node_index, c.generation"
        );
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            Ok(client
                .query(sql.as_str(), &[&deployment_id])
                .await?
                .iter()
                .map(container_row)
                .collect())
        })
        .await
    }

    /// The deployment's latest `limit` events, oldest first.
    pub async fn deployment_events(
        &self,
        deployment_id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeploymentEventRow>> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT at, subject, from_state, to_state, message, job_id FROM (
                         SELECT at, subject, from_state, to_state, message, job_id, id FROM deployment_events
                         WHERE deployment_id = $1 ORDER BY at DESC, id LIMIT $2) AS latest
                     ORDER BY at, id",
                    &[&deployment_id, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| DeploymentEventRow {
                    at: row.get(0),
                    subject: row.get(1),
                    from_state: row.get(2),
                    to_state: row.get(3),
                    message: row.get(4),
                    job_id: row.get(5),
                })
                .collect())
        })
        .await
    }
}
