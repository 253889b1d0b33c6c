//! Deploying a spec generation: its start, the state of each container, the
//! containers an update replaced, and its end.

use super::*;

impl DeploymentStore {
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
                .any(|machine| machine.state != MachineState::Ready)
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
        let row = self
            .query_row(
                "SELECT state, generation FROM deployments WHERE id = $1",
                &[&deployment_id],
                |row| (row.get::<_, String>(0), row.get::<_, i64>(1)),
            )
            .await?;
        row.map(|(state, generation)| Ok((parse_state(&state)?, generation)))
            .transpose()
    }

    /// Ends a deploy: `deploying` → `deployed` (or `failed` with `error`), only while
    /// the generation is still current. Reaching `deployed` starts the health checks'
    /// chain unless it runs already (returned: its first link, due one interval later).
    pub async fn finish_deploy(
        &self,
        deployment_id: Uuid,
        generation: i64,
        error: Option<&str>,
        origin: &Origin,
    ) -> Result<Option<Option<Enqueued>>> {
        let job_id = origin
            .job_id
            .ok_or_else(|| invalid("a deploy finishes as its job"))?;
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(None);
            };
            if locked.state != DeploymentState::Deploying || locked.generation != generation {
                return Ok(None);
            }
            let chain = match error {
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
                    .await?;
                    super::health::ensure_health_chain(tx, deployment_id, origin).await?
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
                    .await?;
                    None
                }
            };
            Ok(Some(chain))
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
                     last_error = CASE WHEN $3 = $8 THEN NULL ELSE COALESCE($6, last_error) END,
                     updated_at = now()
                 WHERE machine_id = $1 AND generation = $2 AND state = $7",
                &[&machine.id, &generation, &to, &docker_id, &image, &error, &from, &ContainerState::Running],
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
        self.execute_one(
            "WITH gone AS (
                 UPDATE containers SET state = $3, updated_at = now()
                 WHERE machine_id = $1 AND generation <> $2 AND state <> $3
                 RETURNING name, state
             )
             INSERT INTO deployment_events (deployment_id, subject, to_state, message, job_id, at)
             SELECT $4, 'container ' || name, $3, 'replaced by generation ' || $2::TEXT, $5, clock_timestamp() FROM gone",
            &[&machine.id, &current, &ContainerState::Removed.as_str(), &machine.deployment_id, &job_id],
        )
        .await
        .map(|_| ())
    }
}
