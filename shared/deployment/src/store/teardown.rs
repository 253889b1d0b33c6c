//! Teardown: the request, the start (which stops provisioning and deploying), the
//! other jobs it cancels or waits for, the machines' changes, and its end (`torn_down`,
//! or `leftovers`).

use super::*;
use crate::TeardownMachinePayload;

/// What a `teardown_machine` job starts from.
#[derive(Clone, Debug)]
pub enum MachineRemoval {
    Proceed {
        /// The deployment's name and spec: its docker-machine store is made from them.
        name: String,
        spec: Box<Spec>,
        machine: Box<MachineRow>,
    },
    /// Nothing to do (the machine is gone already, or its deployment is not tearing
    /// down): the reason.
    Skip(String),
}

impl DeploymentStore {
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
    ///
    /// The delayed teardown of an expiry (`expiry`: its generation) is a second
    /// teardown request: it skips when the deployment is torn down (or `leftovers`)
    /// already, when its expiry was moved since, and when another teardown is under
    /// way (that one does the work). The deployment's row lock orders it against a
    /// teardown asked for by hand, which in turn finds it once it started.
    pub async fn begin_teardown(
        &self,
        deployment_id: Uuid,
        reason: &str,
        job_id: Uuid,
        expiry: Option<i64>,
    ) -> Result<TeardownStart> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(TeardownStart::NotFound);
            };
            if let Some(generation) = expiry
                && let Some(skip) = expiry_skip(tx, deployment_id, locked.state, generation, job_id).await?
            {
                return Ok(TeardownStart::Skip(skip));
            }
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

    /// One `teardown_machine` job for each of `machines`, with the provider account's
    /// concurrency key, in one transaction: the account's limit decides how many
    /// removals run at once. `round` (the teardown job and attempt) is part of each
    /// job's idempotency key, so that a replayed transaction makes them once and the
    /// next attempt makes new ones for what is still left. None while the deployment
    /// is not tearing down (or torn down).
    pub async fn fan_out_removals(
        &self,
        deployment_id: Uuid,
        machines: &[Uuid],
        origin: &Origin,
        round: &str,
    ) -> Result<Vec<Enqueued>> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(Vec::new());
            };
            if !matches!(locked.state, DeploymentState::TearingDown | DeploymentState::TornDown) {
                return Ok(Vec::new());
            }
            let mut jobs = Vec::with_capacity(machines.len());
            for machine_id in machines {
                let payload = TeardownMachinePayload { deployment_id, machine_id: *machine_id };
                let key = format!("teardown-machine:{round}:{machine_id}");
                let new = job(&payload, deployment_id, origin, key)?;
                jobs.push(with_account_key(new, &locked.spec.provider)?);
            }
            enqueue_in_transaction(tx, &jobs).await
        })
    }

    /// Starts a `teardown_machine` job: the machine and what its removal needs, unless
    /// there is nothing to do.
    pub async fn begin_machine_removal(
        &self,
        deployment_id: Uuid,
        machine_id: Uuid,
    ) -> Result<MachineRemoval> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(MachineRemoval::Skip(format!("deployment {deployment_id} does not exist: nothing to remove")));
            };
            if !matches!(locked.state, DeploymentState::TearingDown | DeploymentState::TornDown) {
                return Ok(MachineRemoval::Skip(format!(
                    "the deployment is {}, not tearing down: its machines stay", locked.state
                )));
            }
            let machine = match machine_in_tx(tx, machine_id).await? {
                Some(machine) if machine.deployment_id == deployment_id => machine,
                _ => {
                    return Ok(MachineRemoval::Skip(format!(
                        "machine {machine_id} is not one of the deployment's: nothing to remove"
                    )));
                }
            };
            if matches!(machine.state, MachineState::Removed | MachineState::Abandoned) {
                return Ok(MachineRemoval::Skip(format!(
                    "machine {} is {} already", machine.name, machine.state
                )));
            }
            Ok(MachineRemoval::Proceed {
                name: locked.name,
                spec: Box::new(locked.spec),
                machine: Box::new(machine),
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
                if machine.state == MachineState::Abandoned {
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
                drop_keys(tx, deployment_id).await?;
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
}

/// Why an expiry's delayed teardown (of expiry `generation`) has nothing to do, if so.
async fn expiry_skip(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    state: DeploymentState,
    generation: i64,
    job_id: Uuid,
) -> Result<Option<String>> {
    if matches!(
        state,
        DeploymentState::TornDown | DeploymentState::Leftovers
    ) {
        return Ok(Some(format!(
            "the deployment is {state}: torn down already, nothing to do at its expiry"
        )));
    }
    let current: i64 = tx
        .query_one(
            "SELECT expiry_generation FROM deployments WHERE id = $1",
            &[&deployment_id],
        )
        .await?
        .get(0);
    if current != generation {
        return Ok(Some(format!(
            "the expiry was moved since (expiry {generation} is now {current}): its own delayed teardown runs then"
        )));
    }
    let (live, _) = live_teardowns(tx, deployment_id, Some(job_id)).await?;
    Ok(live
        .first()
        .map(|other| format!("teardown job {other} is under way: it removes everything")))
}

/// Drops the deployment's sealed keys: nothing is left that they could reach.
pub(crate) async fn drop_keys(tx: &Transaction<'_>, deployment_id: Uuid) -> Result {
    tx.execute(
        "UPDATE deployments SET tls_sealed = NULL WHERE id = $1",
        &[&deployment_id],
    )
    .await?;
    Ok(())
}
