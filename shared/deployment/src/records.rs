//! SQL of what makes a deployment's machines portable between workers: the
//! deployment's certificates (`ca_cert` in clear, `tls_sealed` sealed) and each
//! machine's docker-machine store entry (`store_entry`, sealed), plus the teardown
//! steps that record machines one at a time (removed, or abandoned when their entry is
//! broken) and the operator's acknowledgement of leftovers.
//!
//! Writes made on behalf of a job are fenced: they apply only while that attempt of
//! the job is running, so an attempt that lost its lease (its worker stalled, another
//! took over) can no longer change a machine's record.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::store::{
    drop_keys, event, lock, machine_in_tx, pending_expiry_sql, set_machine_state, set_state,
};
use super::{ContainerState, DeploymentState, MachineState, TeardownPayload};
use crate::DeploymentStore;
use lc_shared::in_transaction;
use lc_shared::kind::{JobType, KindOf};
use lc_shared::state::JobState;
use lc_shared::store::{Isolation, Result};

/// The job attempt on whose behalf a write is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub job_id: Uuid,
    pub attempt: i64,
}

/// What `lc deploy ack` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The deployment was `leftovers` and is `torn_down` now.
    Acknowledged {
        abandoned: Vec<String>,
    },
    /// Nothing to acknowledge: the deployment is in this state.
    NotLeftovers(DeploymentState),
    NotFound,
}

/// A deployment that needs an operator (for `lc stuck`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentAttention {
    pub id: Uuid,
    pub name: String,
    pub state: DeploymentState,
    pub since_secs: f64,
    /// `leftovers`: the machines that may still exist, and their driver.
    pub abandoned: Vec<String>,
    pub driver: Option<String>,
    /// `tearing_down` with no live teardown job (its last one died).
    pub teardown_dead: bool,
    /// `degraded`: what its last health check found.
    pub health_reason: Option<String>,
}

/// Whether the attempt still holds its job.
async fn holds(tx: &Transaction<'_>, fence: Fence) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM jobs WHERE id = $1 AND attempt = $2 AND state = $3",
            &[&fence.job_id, &fence.attempt, &JobState::Running.as_str()],
        )
        .await?
        .is_some())
}

impl DeploymentStore {
    /// Stores the deployment's certificates unless it has some already (an earlier
    /// attempt stored them first: those stay, since machines may use them).
    pub async fn store_deployment_tls(
        &self,
        deployment_id: Uuid,
        ca_cert: &str,
        sealed: &[u8],
    ) -> Result<bool> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let changed = tx
                .execute(
                    "UPDATE deployments SET ca_cert = $2, tls_sealed = $3, updated_at = now()
                     WHERE id = $1 AND tls_sealed IS NULL",
                    &[&deployment_id, &ca_cert, &sealed],
                )
                .await?;
            if changed == 1 {
                event(
                    tx,
                    deployment_id,
                    "deployment",
                    None,
                    None,
                    "certificates made: CA and client certificate for the machines",
                    None,
                )
                .await?;
            }
            Ok(changed == 1)
        })
    }

    /// The deployment's CA certificate and sealed secrets, when it has them.
    pub async fn deployment_tls(&self, deployment_id: Uuid) -> Result<Option<(String, Vec<u8>)>> {
        let row = self
            .query_row(
                "SELECT ca_cert, tls_sealed FROM deployments WHERE id = $1",
                &[&deployment_id],
                |row| {
                    let ca: Option<String> = row.get(0);
                    let sealed: Option<Vec<u8>> = row.get(1);
                    ca.zip(sealed)
                },
            )
            .await?;
        Ok(row.flatten())
    }

    /// A machine's sealed store entry, if one was recorded.
    pub async fn machine_entry(&self, machine_id: Uuid) -> Result<Option<Vec<u8>>> {
        let row = self
            .query_row(
                "SELECT store_entry FROM machines WHERE id = $1",
                &[&machine_id],
                |row| row.get::<_, Option<Vec<u8>>>(0),
            )
            .await?;
        Ok(row.flatten())
    }

    /// Writes what a docker-machine call left in a machine's store entry (`None`: the
    /// entry is gone). False when the attempt no longer holds its job: nothing written.
    pub async fn save_machine_entry(
        &self,
        machine_id: Uuid,
        fence: Fence,
        entry: Option<&[u8]>,
    ) -> Result<bool> {
        in_transaction!(self, Isolation::Serializable, tx => {
            if !holds(tx, fence).await? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE machines SET store_entry = $2, updated_at = now() WHERE id = $1",
                &[&machine_id, &entry],
            )
            .await?;
            Ok(true)
        })
    }

    /// A machine is gone (docker-machine removed it, or it never existed): `removed`,
    /// its entry dropped, its containers marked removed. False when the attempt no
    /// longer holds its job.
    pub async fn machine_removed(
        &self,
        machine_id: Uuid,
        fence: Fence,
        message: &str,
    ) -> Result<bool> {
        self.machine_gone(machine_id, fence, MachineState::Removed, message)
            .await
    }

    /// A machine whose store entry is broken: docker-machine can neither use nor remove
    /// it, so the entry is dropped and the machine `abandoned` with a loud event saying
    /// where its cloud resource may still be. The teardown then ends `leftovers`.
    pub async fn machine_abandoned(
        &self,
        machine_id: Uuid,
        fence: Fence,
        message: &str,
    ) -> Result<bool> {
        self.machine_gone(machine_id, fence, MachineState::Abandoned, message)
            .await
    }

    async fn machine_gone(
        &self,
        machine_id: Uuid,
        fence: Fence,
        to: MachineState,
        message: &str,
    ) -> Result<bool> {
        in_transaction!(self, Isolation::Serializable, tx => {
            if !holds(tx, fence).await? {
                return Ok(false);
            }
            let Some(machine) = machine_in_tx(tx, machine_id).await? else {
                return Ok(false);
            };
            // An abandoned machine keeps the reason as its last error; the event says it once.
            let (error, note) = if to == MachineState::Abandoned {
                (Some(message), "teardown")
            } else {
                (None, message)
            };
            set_machine_state(
                tx,
                &machine,
                &to.reachable_from(),
                to,
                error,
                note,
                Some(fence.job_id),
            )
            .await?;
            tx.execute(
                "UPDATE machines SET store_entry = NULL WHERE id = $1",
                &[&machine_id],
            )
            .await?;
            containers_removed(tx, machine.deployment_id, machine_id, fence.job_id).await?;
            Ok(true)
        })
    }

    /// Marks a machine's containers removed (teardown removed them from its engine).
    pub async fn machine_containers_removed(&self, machine_id: Uuid, job_id: Uuid) -> Result {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(machine) = machine_in_tx(tx, machine_id).await? else {
                return Ok(());
            };
            containers_removed(tx, machine.deployment_id, machine_id, job_id).await
        })
    }

    /// `lc deploy ack`: an operator checked the provider for the abandoned machines of a
    /// `leftovers` deployment; it becomes `torn_down` and its keys are dropped.
    pub async fn acknowledge_leftovers(
        &self,
        deployment_id: Uuid,
        note: &str,
    ) -> Result<AckOutcome> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(AckOutcome::NotFound);
            };
            if locked.state != DeploymentState::Leftovers {
                return Ok(AckOutcome::NotLeftovers(locked.state));
            }
            let abandoned: Vec<String> = tx
                .query(
                    "SELECT name FROM machines WHERE deployment_id = $1 AND state = $2 ORDER BY node_index",
                    &[&deployment_id, &MachineState::Abandoned.as_str()],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            set_state(
                tx,
                deployment_id,
                DeploymentState::Leftovers,
                DeploymentState::TornDown,
                None,
                &format!("leftovers acknowledged by an operator: {note}"),
                None,
            )
            .await?;
            drop_keys(tx, deployment_id).await?;
            Ok(AckOutcome::Acknowledged { abandoned })
        })
    }
}

impl DeploymentStore {
    /// Deployments an operator must look at: `leftovers`, `degraded` ones (more nodes
    /// unhealthy than their `max_unhealthy`: nothing is repaired by itself), and
    /// `tearing_down` ones whose teardown job is dead (nothing will finish them).
    pub async fn deployments_needing_attention(&self) -> Result<Vec<DeploymentAttention>> {
        let pending_expiry = pending_expiry_sql("$4");
        let sql = format!(
            "SELECT d.id, d.name, d.state, EXTRACT(EPOCH FROM now() - d.updated_at)::FLOAT8,
                         ARRAY(SELECT m.name FROM machines m WHERE m.deployment_id = d.id AND m.state = $3 ORDER BY m.node_index),
                         (SELECT m.driver FROM machines m WHERE m.deployment_id = d.id LIMIT 1),
                         NOT EXISTS (SELECT 1 FROM jobs j WHERE j.group_id = d.id AND j.kind = $6 AND j.state IN ($4, $5)
                                     AND NOT {pending_expiry}),
                         d.health_reason
                     FROM deployments d
                     WHERE d.state = $1 OR d.state = $2 OR d.state = $7
                     ORDER BY d.updated_at"
        );
        let found = self
            .query_rows(
                &sql,
                &[
                    &DeploymentState::Leftovers.as_str(),
                    &DeploymentState::TearingDown.as_str(),
                    &MachineState::Abandoned.as_str(),
                    &JobState::Queued.as_str(),
                    &JobState::Running.as_str(),
                    &KindOf::<TeardownPayload>::KIND.as_str(),
                    &DeploymentState::Degraded.as_str(),
                ],
                |row| {
                    let state: DeploymentState = row.get(2);
                    let no_live_teardown: bool = row.get(6);
                    DeploymentAttention {
                        id: row.get(0),
                        name: row.get(1),
                        teardown_dead: state == DeploymentState::TearingDown && no_live_teardown,
                        state,
                        since_secs: row.get(3),
                        abandoned: row.get(4),
                        driver: row.get(5),
                        health_reason: row.get(7),
                    }
                },
            )
            .await?;
        Ok(found
            .into_iter()
            .filter(|found| {
                matches!(
                    found.state,
                    DeploymentState::Leftovers | DeploymentState::Degraded
                ) || found.teardown_dead
            })
            .collect())
    }
}

/// Marks the live containers of a machine removed, with their events.
async fn containers_removed(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    machine_id: Uuid,
    job_id: Uuid,
) -> Result {
    let removed = ContainerState::Removed.as_str();
    tx.execute(
        "WITH gone AS (
             UPDATE containers SET state = $2, updated_at = now()
             WHERE machine_id = $1 AND state <> $2
             RETURNING name
         )
         INSERT INTO deployment_events (deployment_id, subject, to_state, message, job_id, at)
         SELECT $3, 'container ' || name, $2, 'removed by teardown', $4, clock_timestamp() FROM gone",
        &[&machine_id, &removed, &deployment_id, &Some(job_id)],
    )
    .await?;
    Ok(())
}

impl MachineState {
    /// The states a machine may be in for a change to `self` to apply.
    pub fn reachable_from(self) -> Vec<MachineState> {
        use MachineState::*;
        match self {
            Pending => vec![],
            // Ready: a health check found the machine gone at the provider and re-creates it.
            Creating => vec![Pending, Creating, Ready],
            Ready => vec![Pending, Creating],
            Failed => vec![Pending, Creating],
            Removing => vec![Pending, Creating, Ready, Failed, Removing],
            Removed | Abandoned => vec![Pending, Creating, Ready, Failed, Removing],
        }
    }
}
