//! Teardown: the request, the start (which stops provisioning and deploying), the
//! other jobs it cancels or waits for, the machines' changes, and its end (`torn_down`,
//! or `leftovers`).

use super::*;

impl Store {
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
                crate::deployment::records::drop_keys(tx, deployment_id).await?;
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
        self.query_rows(
            SQL,
            &[&deployment_id, &kinds, &to, &reason, &queued, &label],
            |row| row.get(0),
        )
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
        self.query_rows(
            "SELECT id, kind FROM jobs WHERE deployment_id = $1 AND kind = ANY($2) AND state = $3 AND id <> $4",
            &[&deployment_id, &kinds, &JobState::Running.as_str(), &except],
            |row| (row.get(0), row.get(1)),
        )
        .await
    }
}
