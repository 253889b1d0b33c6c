//! SQL of the `deployments`, `machines`, `containers` and `deployment_events` tables:
//! the row types and the steps every change shares here, the changes by phase in
//! `create`, `provision`, `deploy` and `teardown`, and what is read in `read`; what
//! the event relay claims in `outbox`, and the webhook deliveries that follow in
//! `webhooks`.
//!
//! Every state change is a conditional update (the expected state in its `WHERE`)
//! plus an event row, in one transaction that goes through the core's retry helper
//! ([`lc_shared::store::retry`]). Changes that
//! decide a deployment's fate (the fan-out, a machine becoming ready and the join, a
//! machine failing for good and the rollback, a teardown request, the steps of a
//! deploy) first lock the deployment row (`SELECT ... FOR UPDATE`), so they run one
//! after the other for the same deployment whatever the isolation level, and enqueue
//! the jobs they imply in the same transaction, with idempotency keys, so a replay
//! after an ambiguous commit makes nothing twice.

mod create;
mod deploy;
mod health;
mod outbox;
mod provision;
mod read;
mod teardown;
mod webhooks;

pub use outbox::{OutboxEvent, claim_deployment_events};
pub use webhooks::{NewDelivery, queue_webhook_deliveries};

pub use health::{CheckRequest, HealthOutcome, HealthStart};
pub use read::UpdateBase;
pub use teardown::MachineRemoval;
pub(super) use teardown::drop_keys;

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ContainerState, DeploymentState, MachineState, Provider, Spec, container_name, machine_name,
};
use crate::health::Health;
use crate::{DeployPayload, ProvisionMachinePayload, ProvisionPayload, TeardownPayload};
use lc_shared::in_transaction;
use lc_shared::job::{NewJob, Priority};
use lc_shared::kind::{JobType, KindOf, KindPayload};
use lc_shared::state::JobState;
use lc_shared::store::{
    Enqueued, Isolation, Result, Store, StoreError, cancel_queued_in_transaction,
    enqueue_in_transaction, limit_unless_set,
};

/// The deployment tables, on the queue's own database: a [`Store`] plus the deployment
/// domain's statements. The queue core knows nothing of these tables; this type is how
/// the domain adds its SQL (its methods live in this module's files). It dereferences
/// to the [`Store`] it wraps, for the transaction helpers. Cheap to clone.
#[derive(Clone)]
pub struct DeploymentStore {
    store: Store,
}

impl DeploymentStore {
    pub fn new(store: Store) -> DeploymentStore {
        DeploymentStore { store }
    }

    /// The job store underneath.
    pub fn jobs(&self) -> &Store {
        &self.store
    }
}

impl std::ops::Deref for DeploymentStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Attempts of a `teardown` job: each waits for running provision and deploy jobs,
/// so a few more than other jobs.
pub const TEARDOWN_ATTEMPTS: i64 = 10;

/// A deployment as operators see it.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentRow {
    pub id: Uuid,
    pub name: String,
    pub owner: String,
    pub provider: String,
    pub spec: serde_json::Value,
    pub state: DeploymentState,
    pub generation: i64,
    pub node_count: i64,
    pub deploy_after_provision: bool,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a delayed teardown removes it (`ttl` or `expires_at` in its spec, moved by
    /// extensions); `None`: it does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its health checks (from its spec): how often, what is repaired, how many at once.
    pub health_interval_ms: i64,
    pub repair: String,
    pub max_unhealthy: String,
    /// When the last check recorded its findings, and what it found and did.
    pub health_checked_at: Option<DateTime<Utc>>,
    pub health_reason: Option<String>,
}

const DEPLOYMENT_COLUMNS: &str = "id, name, owner, provider, spec, state, generation, node_count, \
    deploy_after_provision, last_error, created_at, updated_at, expires_at, health_interval_ms, \
    repair, max_unhealthy, health_checked_at, health_reason";

/// How many columns [`DEPLOYMENT_COLUMNS`] names (a query's own columns follow them).
const DEPLOYMENT_COLUMN_COUNT: usize = 18;

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
        expires_at: row.get(12),
        health_interval_ms: row.get(13),
        repair: row.get(14),
        max_unhealthy: row.get(15),
        health_checked_at: row.get(16),
        health_reason: row.get(17),
    }
}

/// A deployment with its machine and container counts, for `lc deploy ls`.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentSummary {
    #[serde(flatten)]
    pub deployment: DeploymentRow,
    pub machines_ready: i64,
    pub containers_running: i64,
    /// Seconds until `expires_at`, by the database's clock (negative once past).
    pub expires_in_secs: Option<f64>,
}

/// A machine and where its Docker engine is.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineRow {
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub node_index: i64,
    pub name: String,
    pub state: MachineState,
    pub driver: Option<String>,
    pub engine_url: Option<String>,
    pub ip_address: Option<String>,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the last health check found (`unknown` before the first), why, and when.
    pub health: Health,
    pub health_reason: Option<String>,
    pub health_checked_at: Option<DateTime<Utc>>,
}

const MACHINE_COLUMNS: &str = "id, deployment_id, node_index, name, state, driver, engine_url, \
    ip_address, ca_cert_path, client_cert_path, client_key_path, last_error, created_at, updated_at, \
    health, health_reason, health_checked_at";

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
        health: row.get(14),
        health_reason: row.get(15),
        health_checked_at: row.get(16),
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContainerRow {
    pub id: Uuid,
    pub deployment_id: Uuid,
    pub machine_id: Uuid,
    pub machine_name: String,
    pub generation: i64,
    pub name: String,
    pub docker_id: Option<String>,
    pub image: String,
    pub state: ContainerState,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the last health check found (`unknown` before the first), why, and when.
    pub health: Health,
    pub health_reason: Option<String>,
    pub health_checked_at: Option<DateTime<Utc>>,
}

const CONTAINER_SELECT: &str = "SELECT c.id, c.deployment_id, c.machine_id, m.name, c.generation, \
    c.name, c.docker_id, c.image, c.state, c.last_error, c.created_at, c.updated_at, \
    c.health, c.health_reason, c.health_checked_at \
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
        health: row.get(12),
        health_reason: row.get(13),
        health_checked_at: row.get(14),
    }
}

/// One line of a deployment's history.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
        /// When the deployment expires (its spec's `ttl` from the database's time of
        /// the create, or its `expires_at`).
        expires_at: Option<DateTime<Utc>>,
        /// The delayed teardown that runs then, written with the deployment.
        expiry_teardown: Option<Enqueued>,
    },
    /// A live deployment already has this name.
    NameTaken { id: Uuid, state: DeploymentState },
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
    /// An expiry's delayed teardown with nothing to do (the deployment is torn down
    /// already, its expiry was moved, or another teardown is under way): the reason.
    Skip(String),
    NotFound,
}

/// What an extension of a deployment's expiry did.
#[derive(Clone, Debug)]
pub enum ExtendOutcome {
    Extended {
        id: Uuid,
        was: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        /// The delayed teardown at the new time (the old one is cancelled).
        teardown: Enqueued,
    },
    /// The deployment has no expiry to move.
    NotExpiring,
    /// It is being torn down, or gone.
    NotLive(DeploymentState),
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
        state: DeploymentState,
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
        state: parse_state(&state)?,
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
                 last_error = CASE WHEN $3 = $5 THEN NULL ELSE COALESCE($4, last_error) END,
                 updated_at = now()
             WHERE id = $1 AND state = $2",
            &[&id, &from, &to, &error, &DeploymentState::Deployed],
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
    if !from.contains(&machine.state) {
        return Ok(false);
    }
    let changed = tx
        .execute(
            "UPDATE machines SET state = $2, last_error = COALESCE($4, last_error), updated_at = now()
             WHERE id = $1 AND state = $3",
            &[&machine.id, &to, &machine.state, &error],
        )
        .await?;
    if changed == 1 && machine.state != to {
        let message = match error {
            Some(error) => format!("{message}: {error}"),
            None => message.to_owned(),
        };
        event(
            tx,
            machine.deployment_id,
            &format!("machine {}", machine.name),
            Some(machine.state.as_str()),
            Some(to.as_str()),
            &message,
            job_id,
        )
        .await?;
    }
    Ok(changed == 1)
}

/// A job of kind `K` for a deployment, built from its typed payload: the kind's checks
/// and defaults, the origin's queue and priority, and an idempotency key so that a
/// replayed transaction makes it once.
/// A deployment state read from the database; a value no state has is a defect.
fn parse_state(text: &str) -> Result<DeploymentState> {
    text.parse().map_err(|_| StoreError::Corrupt {
        column: "deployments.state",
        value: text.to_owned(),
    })
}

/// A job of the payload's kind (named through [`KindPayload`], so the store needs not
/// name the kinds' module, whose handlers use the store) in the deployment's group, with
/// the origin's queue and priority and an idempotency key.
fn job<P: KindPayload>(
    payload: &P,
    deployment_id: Uuid,
    origin: &Origin,
    key: String,
) -> Result<NewJob> {
    KindOf::<P>::check(payload)
        .map_err(|reason| invalid(format!("invalid {} payload: {reason}", KindOf::<P>::KIND)))?;
    let job = KindOf::<P>::job(payload)
        .map_err(|err| invalid(err.to_string()))?
        .with_group(deployment_id)
        .with_queue(origin.queue.clone())
        .with_priority(origin.priority)
        .with_idempotency_key(key);
    job.validate_envelope()
        .map_err(|err| invalid(err.to_string()))?;
    Ok(job)
}

async fn enqueue_one(tx: &Transaction<'_>, job: NewJob) -> Result<Enqueued> {
    enqueue_in_transaction(tx, std::slice::from_ref(&job))
        .await?
        .pop()
        .ok_or_else(|| invalid("enqueue returned no job"))
}

/// An expiry's delayed teardown that has not started yet (queued, never attempted,
/// not due): not a teardown under way, so a teardown asked for meanwhile does not wait
/// for it. SQL over `jobs j`; `queued` is the placeholder bound to the queued state.
pub(super) fn pending_expiry_sql(queued: &str) -> String {
    format!(
        "(j.payload->'expiry' IS NOT NULL AND j.state = {queued} AND j.attempt = 0 AND j.run_at > now())"
    )
}

/// The deployment's teardown jobs under way (queued, retrying or running; a pending
/// expiry is not), but `except`; and how many teardown jobs it ever had.
async fn live_teardowns(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    except: Option<Uuid>,
) -> Result<(Vec<Uuid>, i64)> {
    let sql = format!(
        "SELECT j.id, j.state IN ($3, $4) AND NOT {} FROM jobs j WHERE j.group_id = $1 AND j.kind = $2",
        pending_expiry_sql("$3")
    );
    let rows = tx
        .query(
            sql.as_str(),
            &[
                &deployment_id,
                &KindOf::<TeardownPayload>::KIND.as_str(),
                &JobState::Queued.as_str(),
                &JobState::Running.as_str(),
            ],
        )
        .await?;
    let live = rows
        .iter()
        .filter(|row| row.get::<_, bool>(1))
        .map(|row| row.get::<_, Uuid>(0))
        .filter(|id| Some(*id) != except)
        .collect();
    Ok((live, rows.len() as i64))
}

/// A job that calls docker-machine (`provision_machine`, `teardown_machine`) with the
/// concurrency key of the provider account (see [`Provider::concurrency_key`]), so that
/// the account's calls in flight stay within the key's limit; jobs of the `local`
/// provider get none.
fn with_account_key(job: NewJob, provider: &Provider) -> Result<NewJob> {
    let Some(key) = provider.concurrency_key() else {
        return Ok(job);
    };
    let job = job.with_concurrency_key(key);
    job.validate_envelope()
        .map_err(|err| invalid(err.to_string()))?;
    Ok(job)
}

/// Gives the provider account's key its default limit unless it has a limit already
/// (an operator's, or one an earlier deployment set): see [`Provider::parallel_calls`].
async fn default_account_limit(tx: &Transaction<'_>, provider: &Provider) -> Result {
    if let (Some(key), Some(limit)) = (provider.concurrency_key(), provider.parallel_calls()) {
        limit_unless_set(tx, &key, limit).await?;
    }
    Ok(())
}

/// The live teardown job of a deployment, or a new one (`teardown:<id>:<n>`). It
/// carries no concurrency key: its machines are removed by `teardown_machine` jobs,
/// each with the provider account's key, while it waits (holding a slot of the key
/// itself would starve them under a limit of 1).
async fn ensure_teardown(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    reason: &str,
    origin: &Origin,
) -> Result<Enqueued> {
    let (live, all) = live_teardowns(tx, deployment_id, None).await?;
    if let Some(id) = live.first() {
        return Ok(Enqueued {
            id: *id,
            created: false,
            hint: None,
        });
    }
    let reason = super::truncate_text(reason, 900);
    let new = job(
        &TeardownPayload {
            deployment_id,
            reason: Some(reason),
            expiry: None,
        },
        deployment_id,
        origin,
        format!("teardown:{deployment_id}:{}", all + 1),
    )?;
    enqueue_one(tx, new).await
}

/// The delayed teardown of a deployment's expiry `generation`, due at `expires_at`.
fn expiry_job(
    deployment_id: Uuid,
    generation: i64,
    expires_at: DateTime<Utc>,
    origin: &Origin,
) -> Result<NewJob> {
    let at = expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(job(
        &TeardownPayload {
            deployment_id,
            reason: Some(format!("expired at {at}")),
            expiry: Some(generation),
        },
        deployment_id,
        origin,
        expiry_key(deployment_id, generation),
    )?
    .with_run_at(expires_at))
}

/// The idempotency key of a deployment's delayed teardown for one expiry generation.
fn expiry_key(deployment_id: Uuid, generation: i64) -> String {
    format!("teardown-expiry:{deployment_id}:{generation}")
}

fn deploy_job(
    deployment_id: Uuid,
    generation: i64,
    max_attempts: i64,
    origin: &Origin,
) -> Result<NewJob> {
    Ok(job(
        &DeployPayload {
            deployment_id,
            generation,
        },
        deployment_id,
        origin,
        format!("deploy:{deployment_id}:{generation}"),
    )?
    .with_max_attempts(max_attempts))
}
