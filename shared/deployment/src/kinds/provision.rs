//! `provision`: fans out. In one transaction it writes a machine row per node and
//! enqueues one `provision_machine` job per machine (key
//! `provision:<deployment>:<generation>:<n>`), so machines are created in parallel
//! across workers, plus the deployment's watchdog (a `provision` job with `watch`).
//! Before that, a docker-machine deployment's CA and client certificate are made, so
//! that every create uses them and none makes its own.
//!
//! The watchdog catches a `provision_machine` job that dies without recording its
//! failure (its lease expired on its last attempt, or an operator cancelled it): it runs
//! every lease period while the deployment is provisioning, and fails the deployment
//! (with the rollback teardown) when a machine's job ended without the machine.

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::ProvisionPayload;

/// Creates every machine of a deployment: fans out one `provision_machine` job per
/// machine; with `watch`, it is the deployment's provisioning watchdog.
pub struct Provision;

impl JobType for Provision {
    const KIND: JobKind = JobKind::named("provision");
    type Payload = ProvisionPayload;
    const TIMEOUT: Duration = Duration::from_secs(45 * MINUTE);
    fn check(payload: &ProvisionPayload) -> Result<(), String> {
        if payload.watch.is_some_and(|watch| watch < 1) {
            return Err("watch must be at least 1".into());
        }
        Ok(())
    }
}

impl KindPayload for ProvisionPayload {
    type Kind = Provision;
}

#[cfg(feature = "worker")]
mod handler {
    use std::time::Duration;

    use crate::{DeploymentState, FanOut, Provider, ProvisionPayload, Spec, WatchOutcome};
    use lc_shared::store::error_chain;

    use super::Provision;
    use crate::runtime::handling::{dispatch, env, is_final, origin, store_error};
    use crate::runtime::session::ensure_tls;
    use lc_worker::{Handler, JobContext, JobError};

    /// How often the watchdog looks: a lease period (a lost job is only visible after its
    /// lease expired), at least a second.
    fn watch_interval(ctx: &JobContext) -> Duration {
        ctx.lease().max(Duration::from_secs(1))
    }

    /// What a worker does with a `provision` job (see the file's doc).
    impl Handler for Provision {
        async fn run(ctx: &JobContext, payload: ProvisionPayload) -> Result<(), JobError> {
            let store = &env(ctx)?.store;
            let id = payload.deployment_id;
            let interval = watch_interval(ctx);
            let Some(watch) = payload.watch else {
                if let Err(err) = make_certificates(ctx, id).await {
                    if is_final(ctx, &err) {
                        let text = error_chain(&err);
                        match store.provisioning_failed(id, &text, &origin(ctx)).await {
                            Ok(Some(teardown)) => dispatch(ctx, &[teardown]).await,
                            Ok(None) => {}
                            Err(store_err) => {
                                tracing::warn!(error = %error_chain(&store_err), "could not record the failed provisioning")
                            }
                        }
                    }
                    return Err(err);
                }
                let fan_out = store
                    .fan_out_provision(id, &origin(ctx), interval)
                    .await
                    .map_err(|err| store_error("fan out the machines", err))?;
                return match fan_out {
                    FanOut::Enqueued(jobs) => {
                        ctx.log(&format!(
                            "enqueued {} provision_machine job(s) and the provisioning watchdog",
                            jobs.len().saturating_sub(1)
                        ))
                        .await;
                        dispatch(ctx, &jobs).await;
                        Ok(())
                    }
                    FanOut::NotProvisioning(state) => {
                        ctx.log(&format!("deployment is {state}; nothing to provision"))
                            .await;
                        Ok(())
                    }
                    FanOut::NotFound => {
                        Err(JobError::fatal(format!("deployment {id} does not exist")))
                    }
                };
            };
            match store
                .provision_watch(id, watch, interval, &origin(ctx))
                .await
                .map_err(|err| store_error("check on the provisioning", err))?
            {
                WatchOutcome::Done(state) => {
                    ctx.log(&format!("deployment is {state}; the watch ends"))
                        .await;
                }
                WatchOutcome::Failed { machine, teardown } => {
                    ctx.log(&format!(
                    "machine {machine}'s job ended without the machine: deployment failed, rollback teardown {}",
                    teardown.id
                ))
                .await;
                    dispatch(ctx, &[teardown]).await;
                }
                // Due later: the sweeper dispatches it then.
                WatchOutcome::Rescheduled(_) | WatchOutcome::NotFound => {}
            }
            Ok(())
        }
    }

    /// A docker-machine deployment's CA and client certificate exist before any machine is
    /// created, so that every create uses them and none makes its own.
    async fn make_certificates(ctx: &JobContext, id: uuid::Uuid) -> Result<(), JobError> {
        let Some(row) = env(ctx)?
            .store
            .deployment(id)
            .await
            .map_err(|err| store_error("read the deployment", err))?
        else {
            return Ok(());
        };
        let spec = Spec::from_json(&row.spec)
            .map_err(|err| JobError::fatal_from("the stored spec is invalid", err))?;
        if row.state != DeploymentState::Provisioning
            || !matches!(spec.provider, Provider::DockerMachine { .. })
        {
            return Ok(());
        }
        ensure_tls(ctx, id, &row.name, &spec).await.map(|_| ())
    }
}
