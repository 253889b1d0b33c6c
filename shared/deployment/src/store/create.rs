//! A deployment's birth and its later specs: the row, its first event, its
//! `provision` job and, when it expires, its delayed teardown; a new generation and its
//! `deploy` job; an expiry moved.

use super::*;

impl DeploymentStore {
    /// Writes a new deployment (state `provisioning`) and enqueues its `provision` job,
    /// in one transaction. The spec must be validated already. A spec with a `ttl` or
    /// `expires_at` gets its expiry (a `ttl` counts from the database's time of the
    /// transaction) and the delayed teardown due then, in the same transaction: the
    /// deployment cannot exist without it.
    /// A docker-machine provider's account key gets its default limit if it has none.
    pub async fn create_deployment(
        &self,
        spec: &Spec,
        deploy_after_provision: bool,
        origin: &Origin,
    ) -> Result<CreateOutcome> {
        let id = Uuid::new_v4();
        let spec_json = spec.to_json();
        let provision = job(
            &ProvisionPayload {
                deployment_id: id,
                watch: None,
            },
            id,
            origin,
            format!("provision:{id}"),
        )?;
        let expiry = spec.expiry().map_err(|err| invalid(err.to_string()))?;
        let health = HealthColumns::of(spec)?;
        let provider = spec.provider.kind();
        let node_count = spec.node_count();
        let initial = DeploymentState::Provisioning.as_str();
        // The id is chosen before the first try, so a replay after an ambiguous commit
        // finds its own row instead of reporting the name as taken.
        in_transaction!(self, Isolation::Serializable, tx => {
            let expires_at = match expiry {
                Some(expiry) => {
                    let now: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
                    match expiry.deadline(now) {
                        Ok(at) => Some(at),
                        // A replay whose first try committed keeps that try's expiry.
                        Err(_) if tx.query_opt("SELECT 1 FROM deployments WHERE id = $1", &[&id]).await?.is_some() => None,
                        Err(err) => return Err(invalid(err.to_string())),
                    }
                }
                None => None,
            };
            let expiry_generation: i64 = expires_at.map_or(0, |_| 1);
            let inserted = tx
                .execute(
                    "INSERT INTO deployments (id, name, owner, provider, spec, state, generation, node_count, deploy_after_provision, expires_at, expiry_generation,
                                              health_interval_ms, repair, max_unhealthy)
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
                    &[&id, &spec.name, &spec.owner, &provider, &spec_json, &initial, &node_count, &deploy_after_provision, &expires_at, &expiry_generation,
                      &health.interval_ms, &health.repair, &health.max_unhealthy],
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
                        Some(row) => Ok(CreateOutcome::NameTaken { id: row.get(0), state: parse_state(row.get(1))? }),
                        None => Err(invalid(format!("deployment {:?} could not be written", spec.name))),
                    };
                }
            } else {
                let expiry = expires_at
                    .map(|at| format!(", expires at {}", at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                    .unwrap_or_default();
                let message = format!(
                    "created by {} ({} node(s), provider {provider}{}{expiry})",
                    spec.owner,
                    node_count,
                    if deploy_after_provision { ", deploy after provisioning" } else { "" }
                );
                event(tx, id, "deployment", None, Some(initial), &message, origin.job_id).await?;
                default_account_limit(tx, &spec.provider).await?;
            }
            let provision = enqueue_one(tx, provision.clone()).await?;
            // What the row holds (a replay finds the first try's expiry).
            let row = tx
                .query_one("SELECT expires_at, expiry_generation FROM deployments WHERE id = $1", &[&id])
                .await?;
            let expires_at: Option<DateTime<Utc>> = row.get(0);
            let expiry_teardown = match expires_at {
                Some(at) => Some(enqueue_one(tx, expiry_job(id, row.get(1), at, origin)?).await?),
                None => None,
            };
            Ok(CreateOutcome::Created { id, provision, expires_at, expiry_teardown })
        })
    }

    /// Moves a deployment's expiry `by` later, in one transaction: the row's
    /// `expires_at` and `expiry_generation`, an event, the old delayed teardown
    /// cancelled (if it has not started: one that has finds the generation moved on and
    /// does nothing) and the next one enqueued at the new time.
    pub async fn extend_expiry(
        &self,
        deployment_id: Uuid,
        by: Duration,
        origin: &Origin,
    ) -> Result<ExtendOutcome> {
        let by = crate::spec::chrono_duration(by);
        // The new delayed teardown's id is chosen before the first try, so a replay
        // after an ambiguous commit finds it and does not extend a second time.
        let job_id = Uuid::new_v4();
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(ExtendOutcome::NotFound);
            };
            if tx.query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&job_id]).await?.is_some() {
                let expires_at: DateTime<Utc> = tx
                    .query_one("SELECT expires_at FROM deployments WHERE id = $1", &[&deployment_id])
                    .await?
                    .get(0);
                let teardown = Enqueued { id: job_id, created: false, hint: None };
                return Ok(ExtendOutcome::Extended { id: deployment_id, was: expires_at - by, expires_at, teardown });
            }
            if matches!(
                locked.state,
                DeploymentState::TearingDown | DeploymentState::Leftovers | DeploymentState::TornDown
            ) {
                return Ok(ExtendOutcome::NotLive(locked.state));
            }
            let row = tx
                .query_one(
                    "SELECT expires_at, expiry_generation FROM deployments WHERE id = $1",
                    &[&deployment_id],
                )
                .await?;
            let Some(was) = row.get::<_, Option<DateTime<Utc>>>(0) else {
                return Ok(ExtendOutcome::NotExpiring);
            };
            let generation: i64 = row.get(1);
            let expires_at = was + by;
            tx.execute(
                "UPDATE deployments SET expires_at = $2, expiry_generation = $3, updated_at = now()
                 WHERE id = $1 AND expiry_generation = $4",
                &[&deployment_id, &expires_at, &(generation + 1), &generation],
            )
            .await?;
            let at = |time: DateTime<Utc>| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let old: Vec<Uuid> = tx
                .query(
                    "SELECT id FROM jobs WHERE idempotency_key = $1",
                    &[&expiry_key(deployment_id, generation)],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            cancel_queued_in_transaction(tx, &old, &format!("expiry moved to {}", at(expires_at)))
                .await?;
            event(
                tx,
                deployment_id,
                "deployment",
                None,
                None,
                &format!("expiry extended to {} (was {})", at(expires_at), at(was)),
                origin.job_id,
            )
            .await?;
            let next = expiry_job(deployment_id, generation + 1, expires_at, origin)?.with_id(job_id);
            let teardown = enqueue_one(tx, next).await?;
            Ok(ExtendOutcome::Extended { id: deployment_id, was, expires_at, teardown })
        })
    }

    /// Stores a new spec (same nodes and provider) as the next generation and enqueues
    /// its `deploy` job, which replaces the containers one machine at a time. The
    /// expiry stays as it is: a spec that leaves `ttl` and `expires_at` out keeps the
    /// stored ones.
    pub async fn update_deployment(&self, spec: &Spec, origin: &Origin) -> Result<UpdateOutcome> {
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
            let machines = machines_in_tx(tx, id).await?;
            let deploy_live = live_deploys(tx, id).await? > 0;
            if let Some(reason) = update_refusal(&locked.spec, locked.state, &machines, deploy_live, spec) {
                return Ok(UpdateOutcome::NotUpdatable { state: locked.state, reason: reason.to_owned() });
            }
            let spec_json = updated_spec(&locked.spec, spec).to_json();
            let generation = locked.generation + 1;
            let health = HealthColumns::of(spec)?;
            tx.execute(
                "UPDATE deployments SET spec = $2, generation = $3, updated_at = now(),
                     health_interval_ms = $5, repair = $6, max_unhealthy = $7
                 WHERE id = $1 AND generation = $4",
                &[&id, &spec_json, &generation, &locked.generation, &health.interval_ms, &health.repair, &health.max_unhealthy],
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

/// A spec's health settings as the deployment row holds them.
struct HealthColumns {
    interval_ms: i64,
    repair: &'static str,
    max_unhealthy: String,
}

impl HealthColumns {
    fn of(spec: &Spec) -> Result<HealthColumns> {
        let health = spec.health().map_err(|err| invalid(err.to_string()))?;
        Ok(HealthColumns {
            interval_ms: i64::try_from(health.interval.as_millis()).unwrap_or(i64::MAX),
            repair: health.repair.as_str(),
            max_unhealthy: health.max_unhealthy.to_string(),
        })
    }
}

/// Queued or running `deploy` jobs of a deployment.
pub(super) async fn live_deploys(tx: &Transaction<'_>, id: Uuid) -> Result<i64> {
    Ok(tx
        .query_one(
            "SELECT count(*) FROM jobs WHERE group_id = $1 AND kind = $2 AND state = ANY($3)",
            &[
                &id,
                &KindOf::<DeployPayload>::KIND.as_str(),
                &vec![JobState::Queued.as_str(), JobState::Running.as_str()],
            ],
        )
        .await?
        .get(0))
}

/// Why updating a deployment (its stored spec and state, its machines, whether a
/// deploy is queued or running) to `new` is refused, if it is: what `lc deploy update`
/// answers, and what its plan says.
pub(super) fn update_refusal(
    current: &Spec,
    state: DeploymentState,
    machines: &[MachineRow],
    deploy_live: bool,
    new: &Spec,
) -> Option<&'static str> {
    if current.node_count() != new.node_count() || current.provider != new.provider {
        return Some(
            "an update may change the payload and timeouts only; changing nodes or the provider needs a new deployment",
        );
    }
    if new.owner != current.owner {
        return Some("an update may not change the owner");
    }
    let keeps_expiry = (new.ttl.is_none() && new.expires_at.is_none())
        || (new.ttl == current.ttl && new.expires_at == current.expires_at);
    if !keeps_expiry {
        return Some("an update keeps the expiry (ttl, expires_at): `lc deploy extend` moves it");
    }
    if !matches!(
        state,
        DeploymentState::Provisioned
            | DeploymentState::Deployed
            | DeploymentState::Degraded
            | DeploymentState::Deploying
            | DeploymentState::Failed
    ) {
        return Some("only provisioned, deployed, degraded or failed deployments can be updated");
    }
    if machines.len() as i64 != new.node_count()
        || machines
            .iter()
            .any(|machine| machine.state != MachineState::Ready)
    {
        return Some("not every machine is ready");
    }
    // A deploy still marked running while the deployment is deployed (or failed) has
    // done its work and is only recording its outcome.
    if deploy_live && state == DeploymentState::Deploying {
        return Some("a deploy is queued or running; wait for it to finish");
    }
    None
}

/// The spec an update stores: the new one, with the current one's expiry fields (an
/// update never moves the expiry; a spec file that leaves them out keeps them).
pub(super) fn updated_spec(current: &Spec, new: &Spec) -> Spec {
    Spec {
        ttl: current.ttl.clone(),
        expires_at: current.expires_at.clone(),
        ..new.clone()
    }
}
