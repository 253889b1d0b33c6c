//! A deployment's birth and its later specs: the row, its first event and its
//! `provision` job; a new generation and its `deploy` job.

use super::*;

impl DeploymentStore {
    /// Writes a new deployment (state `provisioning`) and enqueues its `provision` job,
    /// in one transaction. The spec must be validated already. A docker-machine
    /// provider's account key gets its default limit if it has none.
    pub async fn create_deployment(
        &self,
        spec: &Spec,
        deploy_after_provision: bool,
        origin: &Origin,
    ) -> Result<CreateOutcome> {
        let id = Uuid::new_v4();
        let spec_json = spec.to_json();
        let provision = job::<Provision>(
            &ProvisionPayload {
                deployment_id: id,
                watch: None,
            },
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
                default_account_limit(tx, &spec.provider).await?;
            }
            let provision = enqueue_one(tx, provision.clone()).await?;
            Ok(CreateOutcome::Created { id, provision })
        })
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
                || machines.iter().any(|machine| machine.state != MachineState::Ready)
            {
                return refuse("not every machine is ready");
            }
            let live_deploys: i64 = tx
                .query_one(
                    "SELECT count(*) FROM jobs WHERE group_id = $1 AND kind = $2 AND state = ANY($3)",
                    &[&id, &Deploy::KIND.as_str(), &vec![JobState::Queued.as_str(), JobState::Running.as_str()]],
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
}
