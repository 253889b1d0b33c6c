//! Provisioning: the fan-out of one `provision_machine` job per machine, each machine's
//! start, readiness (with the join that makes the deployment `provisioned`) or failure
//! (with the rollback), and the provisioning watchdog.

use super::*;

impl DeploymentStore {
    /// The `provision` job's fan-out: one machine row and one `provision_machine` job
    /// per node (`provision:<id>:<generation>:<n>`), plus the provisioning watchdog,
    /// all in the transaction that checks the deployment is still provisioning. The
    /// machine jobs carry the provider account's concurrency key: at most its limit of
    /// them run at once, the others wait queued (their key gets its default limit here
    /// too, for deployments created before keys existed).
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
                crate::Provider::Local {} => None,
                crate::Provider::DockerMachine { driver, .. } => Some(driver.clone()),
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
            default_account_limit(tx, &locked.spec.provider).await?;
            let mut jobs = Vec::with_capacity(nodes.len() + 1);
            for node in &nodes {
                let machine = job(
                    &ProvisionMachinePayload {
                        deployment_id,
                        node: *node,
                        repair: None,
                    },
                    deployment_id,
                    origin,
                    format!("provision:{deployment_id}:{}:{node}", locked.generation),
                )?
                .with_max_attempts(locked.spec.max_attempts);
                jobs.push(with_account_key(machine, &locked.spec.provider)?);
            }
            jobs.push(watch_job(deployment_id, 1, watch_interval, origin)?);
            let enqueued = enqueue_in_transaction(tx, &jobs).await?;
            Ok(FanOut::Enqueued(enqueued))
        })
    }

    /// Starts a `provision_machine` attempt: checks the deployment is provisioning and
    /// moves the machine to `creating`. A `repair` (a machine re-created after a health
    /// check found it gone) instead needs the deployment `deploying` (the check moved it
    /// there) and the machine `creating`; otherwise it makes and removes nothing (a
    /// teardown removes what is recorded).
    pub async fn begin_machine(
        &self,
        deployment_id: Uuid,
        node: i64,
        job_id: Uuid,
        repair: bool,
    ) -> Result<MachineStart> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(MachineStart::NotFound);
            };
            let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 AND node_index = $2");
            let machine = tx.query_opt(sql.as_str(), &[&deployment_id, &node]).await?.as_ref().map(machine_row);
            if repair {
                return Ok(match machine {
                    None => MachineStart::NotFound,
                    Some(machine) if machine.state == MachineState::Ready => MachineStart::AlreadyReady(machine),
                    Some(machine) if locked.state == DeploymentState::Deploying && machine.state == MachineState::Creating => {
                        MachineStart::Create { machine, spec: Box::new(locked.spec), deployment_name: locked.name, fresh: false }
                    }
                    Some(_) => MachineStart::Stop { state: locked.state, machine: None, spec: Box::new(locked.spec) },
                });
            }
            if locked.state != DeploymentState::Provisioning {
                return Ok(MachineStart::Stop { state: locked.state, machine, spec: Box::new(locked.spec) });
            }
            let Some(machine) = machine else {
                return Ok(MachineStart::NotFound);
            };
            let outcome = match machine.state {
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
    #[allow(clippy::too_many_arguments)]
    pub async fn machine_ready(
        &self,
        deployment_id: Uuid,
        machine_id: Uuid,
        endpoint: &Endpoint,
        entry: Option<&[u8]>,
        fence: crate::Fence,
        origin: &Origin,
        repair: Option<Uuid>,
    ) -> Result<ReadyOutcome> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Err(invalid(format!("deployment {deployment_id} vanished")));
            };
            let expected = match repair {
                Some(_) => DeploymentState::Deploying,
                None => DeploymentState::Provisioning,
            };
            if locked.state != expected {
                return Ok(ReadyOutcome::NotProvisioning(locked.state));
            }
            let machine = machine_in_tx(tx, machine_id)
                .await?
                .ok_or_else(|| invalid(format!("machine {machine_id} vanished")))?;
            if machine.state != MachineState::Ready {
                record_ready(tx, &machine, endpoint, entry, fence, origin).await?;
            }
            let counts = tx
                .query_one(
                    "SELECT count(*) FILTER (WHERE state = $2), count(*) FROM machines WHERE deployment_id = $1",
                    &[&deployment_id, &MachineState::Ready.as_str()],
                )
                .await?;
            let (ready, total): (i64, i64) = (counts.get(0), counts.get(1));
            if let Some(check_id) = repair {
                // A repair's join: once every machine is ready again, one deploy of the
                // current generation (its key is the check's: made once).
                if ready < total {
                    return Ok(ReadyOutcome::Waiting { ready, total });
                }
                let deploy = super::health::repair_deploy_job(deployment_id, &locked, check_id, origin)?;
                return Ok(ReadyOutcome::Joined { deploy: Some(enqueue_one(tx, deploy).await?) });
            }
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
    ///
    /// A machine being re-created by a repair (`repair`) that fails for good makes the
    /// deployment `failed` without a rollback: the other machines keep running.
    pub async fn machine_failed(
        &self,
        deployment_id: Uuid,
        machine_id: Uuid,
        error: &str,
        origin: &Origin,
        repair: bool,
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
            if repair {
                if locked.state == DeploymentState::Deploying {
                    set_state(tx, deployment_id, locked.state, DeploymentState::Failed, Some(&reason), "repair failed", origin.job_id)
                        .await?;
                }
                return Ok(None);
            }
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
        self.execute_one(
            "UPDATE machines SET last_error = $2, updated_at = now() WHERE id = $1",
            &[&machine_id, &error],
        )
        .await
        .map(|_| ())
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
                       ON m.deployment_id = j.group_id AND m.node_index = (j.payload->>'node')::INT8
                     WHERE j.group_id = $1 AND j.kind = $2 AND j.state = ANY($3) AND m.state <> $4
                     ORDER BY m.node_index LIMIT 1",
                    &[
                        &deployment_id,
                        &KindOf::<ProvisionMachinePayload>::KIND.as_str(),
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

    /// The fan-out itself failed for good (no key to seal the certificates with, an
    /// unusable operator CA): the deployment becomes `failed` and a rollback teardown is
    /// enqueued, so it does not wait in `provisioning` for machines nobody will make.
    pub async fn provisioning_failed(
        &self,
        deployment_id: Uuid,
        error: &str,
        origin: &Origin,
    ) -> Result<Option<Enqueued>> {
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(locked) = lock(tx, deployment_id).await? else {
                return Ok(None);
            };
            if locked.state != DeploymentState::Provisioning {
                return Ok(None);
            }
            set_state(tx, deployment_id, locked.state, DeploymentState::Failed, Some(error), "provisioning failed", origin.job_id)
                .await?;
            let reason = format!("rollback: provisioning failed: {error}");
            Ok(Some(ensure_teardown(tx, deployment_id, &reason, origin).await?))
        })
    }
}

/// The provisioning watchdog's run number `watch`, `interval` from now.
fn watch_job(
    deployment_id: Uuid,
    watch: i64,
    interval: Duration,
    origin: &Origin,
) -> Result<NewJob> {
    let run_at =
        Utc::now() + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::seconds(30));
    Ok(job(
        &ProvisionPayload {
            deployment_id,
            watch: Some(watch),
        },
        deployment_id,
        origin,
        format!("provision-watch:{deployment_id}:{watch}"),
    )?
    .with_run_at(run_at))
}

/// Records a machine ready with its engine endpoint (and its docker-machine store entry),
/// fenced: an attempt that no longer holds its job records nothing.
async fn record_ready(
    tx: &Transaction<'_>,
    machine: &MachineRow,
    endpoint: &Endpoint,
    entry: Option<&[u8]>,
    fence: crate::Fence,
    origin: &Origin,
) -> Result {
    let machine_id = machine.id;
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
    let message = format!(
        "engine {} (ip {})",
        endpoint.url,
        endpoint.ip_address.as_deref().unwrap_or("-")
    );
    let changed = set_machine_state(
        tx,
        machine,
        &[MachineState::Pending, MachineState::Creating],
        MachineState::Ready,
        None,
        &message,
        origin.job_id,
    )
    .await?;
    if !changed {
        return Err(invalid(format!(
            "machine {} is {}, not creating",
            machine.name, machine.state
        )));
    }
    Ok(())
}
