//! Reading deployments: naming one (by name or id, once), one with everything an
//! operator looks at, the list, its history, waiting until it reaches a state, and
//! the deployments (and jobs) that need an operator.

use std::time::{Duration, Instant};

use lc_producer::inspect::{Finding, JobListParams, JobRow, StuckParams};
use lc_shared::JobState;
use lc_shared::kind::{JobType, KindOf};
use uuid::Uuid;

use super::{DeploymentError, Deployments, Result};
use crate::{
    ContainerRow, DeploymentAttention, DeploymentEventRow, DeploymentRow, DeploymentState,
    DeploymentSummary, HealthCheckPayload, MachineRow, ProvisionPayload, TeardownPayload,
    redact_secrets,
};

/// How often [`Deployments::wait`] looks at the deployment.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// Jobs of a deployment that [`Deployments::get`] returns, newest first.
const VIEW_JOBS: i64 = 200;
/// Most events, or deployments, one read returns.
const MAX_ROWS: i64 = 10_000;

/// A deployment with everything an operator looks at; secret-looking values in its
/// spec and its jobs' payloads are redacted.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentView {
    pub deployment: DeploymentRow,
    pub machines: Vec<MachineRow>,
    pub containers: Vec<ContainerRow>,
    /// Its jobs, newest first.
    pub jobs: Vec<JobRow>,
    /// The latest events, newest last.
    pub events: Vec<DeploymentEventRow>,
    /// What an operator should know that the states alone do not say, each with what
    /// to do.
    pub warnings: Vec<String>,
}

impl DeploymentView {
    /// The jobs worth showing: all but the provisioning watchdog's runs (one every
    /// few minutes while machines are made) and the periodic health checks (one every
    /// interval), unless one died; the latest check is shown by itself.
    pub fn visible_jobs(&self) -> impl Iterator<Item = &JobRow> {
        self.jobs.iter().filter(|job| {
            let watchdog =
                job.kind == KindOf::<ProvisionPayload>::KIND && job.payload.get("watch").is_some();
            let periodic = job.kind == KindOf::<HealthCheckPayload>::KIND
                && job.payload.get("chain").is_some();
            !(watchdog || periodic) || job.state == JobState::Dead
        })
    }
}

/// How a wait for a deployment's state ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitOutcome {
    /// It reached the state waited for.
    Reached,
    /// It ended elsewhere (failed, rolled back, its teardown job dead, leftovers).
    Failed { reason: String },
    /// The time was up first.
    TimedOut,
}

/// Where a deployment was when [`Deployments::wait`] returned.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentWait {
    pub id: Uuid,
    pub name: String,
    pub state: DeploymentState,
    pub target: DeploymentState,
    /// How long the wait took.
    pub seconds: f64,
    pub outcome: WaitOutcome,
}

/// A deployment that only an operator can finish, with why and what to do.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attention {
    #[serde(flatten)]
    pub deployment: DeploymentAttention,
    pub reason: String,
    pub fix: String,
}

impl Attention {
    fn new(deployment: DeploymentAttention) -> Attention {
        let name = &deployment.name;
        let (reason, fix) = if deployment.state == DeploymentState::Degraded {
            (
                format!(
                    "degraded: {}",
                    deployment
                        .health_reason
                        .as_deref()
                        .unwrap_or("more nodes unhealthy than max_unhealthy allows")
                ),
                format!(
                    "see lc deploy show {name}; fix the cause (network, provider), then: lc deploy check {name} ; or: lc deploy teardown {name}"
                ),
            )
        } else if deployment.state == DeploymentState::Leftovers {
            (
                format!(
                    "teardown could not confirm machine(s) {} removed: they may still exist at the provider (driver {}); look for machines with these names there",
                    deployment.abandoned.join(", "),
                    deployment.driver.as_deref().unwrap_or("?")
                ),
                format!("delete them at the provider, then: lc deploy ack {name}"),
            )
        } else {
            (
                "its teardown job is dead: nothing finishes it; see lc deploy show".to_owned(),
                format!("lc deploy show {name} ; lc deploy teardown {name}"),
            )
        };
        Attention {
            deployment,
            reason,
            fix,
        }
    }
}

/// A deployment's finding as `lc stuck` lists it among the jobs'.
impl From<Attention> for Finding {
    fn from(found: Attention) -> Finding {
        Finding {
            job_id: None,
            kind: "deployment".into(),
            queue: found.deployment.name,
            state: found.deployment.state.to_string(),
            attempt: 0,
            worker: None,
            since_secs: found.deployment.since_secs,
            reason: found.reason,
            fix: found.fix,
        }
    }
}

/// The first line of a text, cut to `max` characters.
fn first_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        format!("{}…", first.chars().take(max - 1).collect::<String>())
    } else {
        first.to_owned()
    }
}

/// Things an operator should know that the states alone do not say.
fn warnings(deployment: &DeploymentRow, jobs: &[JobRow]) -> Vec<String> {
    let mut warnings = Vec::new();
    let settled = matches!(
        deployment.state,
        DeploymentState::Deployed | DeploymentState::TornDown | DeploymentState::Provisioned
    );
    if !settled {
        for job in jobs.iter().filter(|job| job.state == JobState::Dead) {
            warnings.push(format!(
                "{} job {} is dead: {}; fix the cause and `lc jobs retry {}`, or `lc deploy teardown {}`",
                job.kind,
                job.id,
                first_line(job.last_error.as_deref().unwrap_or("no error recorded"), 120),
                job.id,
                deployment.name
            ));
        }
    }
    // An expiry's delayed teardown that has not come due is not under way.
    let now = chrono::Utc::now();
    let teardown_under_way = jobs.iter().any(|job| {
        let pending_expiry = job.payload.get("expiry").is_some()
            && job.state == JobState::Queued
            && job.attempt == 0
            && job.run_at > now;
        job.kind == KindOf::<TeardownPayload>::KIND
            && matches!(job.state, JobState::Queued | JobState::Running)
            && !pending_expiry
    });
    if deployment.state == DeploymentState::Failed && !teardown_under_way {
        warnings.push(format!(
            "deployment failed: `lc deploy teardown {}` removes what is left",
            deployment.name
        ));
    }
    warnings
}

impl Deployments {
    /// The id of the deployment `name_or_id` names: the id itself if a deployment has
    /// it, else the live deployment of that name, else the newest of that name. Of a
    /// client scoped to an owner ([`Deployments::for_owner`]), only that owner's.
    pub async fn resolve(&self, name_or_id: &str) -> Result<Uuid> {
        let found = match name_or_id.parse::<Uuid>() {
            Ok(id) => self.store.has_deployment(id).await?.then_some(id),
            Err(_) if crate::validate_name(name_or_id).is_err() => None,
            Err(_) => self.store.deployment_id(name_or_id).await?,
        };
        let not_found = || DeploymentError::NotFound(name_or_id.to_owned());
        let id = found.ok_or_else(not_found)?;
        // Another owner's deployment is "not found", like one that does not exist.
        if let Some(owner) = &self.owner {
            let row = self.store.deployment(id).await?.ok_or_else(not_found)?;
            if &row.owner != owner {
                return Err(not_found());
            }
        }
        Ok(id)
    }

    /// A deployment's row, spec redacted.
    async fn row(&self, id: Uuid) -> Result<DeploymentRow> {
        let mut row = self
            .store
            .deployment(id)
            .await?
            .ok_or_else(|| DeploymentError::NotFound(id.to_string()))?;
        redact_secrets(&mut row.spec);
        Ok(row)
    }

    /// Jobs of a deployment, newest first, of one kind if given.
    async fn jobs_of(&self, id: Uuid, kind: Option<&str>, limit: i64) -> Result<Vec<JobRow>> {
        let params = JobListParams {
            group: Some(id),
            kind: kind.map(str::to_owned),
            limit,
            ..Default::default()
        };
        Ok(self.inspector().jobs(&params).await?.jobs)
    }

    /// A deployment with its machines, containers, jobs, latest `events` and warnings.
    pub async fn get(&self, id: Uuid, events: i64) -> Result<DeploymentView> {
        let deployment = self.row(id).await?;
        let jobs = self.jobs_of(id, None, VIEW_JOBS).await?;
        Ok(DeploymentView {
            warnings: warnings(&deployment, &jobs),
            machines: self.store.machines(id).await?,
            containers: self.store.containers(id).await?,
            events: self.history(id, events).await?,
            deployment,
            jobs,
        })
    }

    /// Deployments, newest first (torn down ones only with `all`), specs redacted.
    pub async fn list(&self, all: bool, limit: i64) -> Result<Vec<DeploymentSummary>> {
        let mut found = self
            .store
            .list_deployments(all, limit.clamp(1, MAX_ROWS), self.owner.as_deref())
            .await?;
        for summary in &mut found {
            redact_secrets(&mut summary.deployment.spec);
        }
        Ok(found)
    }

    /// A deployment's latest `limit` events (its machines' and containers' too),
    /// oldest first.
    pub async fn history(&self, id: Uuid, limit: i64) -> Result<Vec<DeploymentEventRow>> {
        Ok(self
            .store
            .deployment_events(id, limit.clamp(1, MAX_ROWS))
            .await?)
    }

    /// Waits until the deployment is in `target`, ends elsewhere (failed, rolled back,
    /// its teardown job dead, leftovers), or `timeout` passes: what `lc deploy create
    /// --wait` does.
    pub async fn wait(
        &self,
        id: Uuid,
        target: DeploymentState,
        timeout: Duration,
    ) -> Result<DeploymentWait> {
        let started = Instant::now();
        loop {
            let deployment = self.row(id).await?;
            let outcome = match self.ended(&deployment, target).await? {
                Some(outcome) => outcome,
                None if started.elapsed() > timeout => WaitOutcome::TimedOut,
                None => {
                    tokio::time::sleep(WAIT_POLL).await;
                    continue;
                }
            };
            return Ok(DeploymentWait {
                id,
                name: deployment.name,
                state: deployment.state,
                target,
                seconds: started.elapsed().as_secs_f64(),
                outcome,
            });
        }
    }

    /// Whether a wait for `target` is over, and how.
    async fn ended(
        &self,
        deployment: &DeploymentRow,
        target: DeploymentState,
    ) -> Result<Option<WaitOutcome>> {
        use DeploymentState::{Failed, Leftovers, TearingDown, TornDown};
        let state = deployment.state;
        let reason = match (target, state) {
            _ if state == target => return Ok(Some(WaitOutcome::Reached)),
            (TornDown, Leftovers) => Some(
                "the teardown ended, but some machines could not be confirmed removed and may still exist at the provider: `lc stuck` lists them; delete them there, then `lc deploy ack`"
                    .to_owned(),
            ),
            (TornDown, _) => self.dead_teardown(deployment.id).await?,
            (_, Failed | TearingDown | TornDown) => Some(
                deployment
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("it is {state}")),
            ),
            _ => None,
        };
        Ok(reason.map(|reason| WaitOutcome::Failed { reason }))
    }

    /// While waiting for a teardown: its error once every teardown job of the
    /// deployment ended without succeeding.
    async fn dead_teardown(&self, id: Uuid) -> Result<Option<String>> {
        let jobs = self
            .jobs_of(id, Some(KindOf::<TeardownPayload>::KIND.as_str()), 100)
            .await?;
        let all_failed = jobs
            .iter()
            .all(|job| matches!(job.state, JobState::Dead | JobState::Cancelled));
        Ok(match jobs.first() {
            Some(newest) if all_failed => Some(format!(
                "teardown job {} is {}: {}",
                newest.id,
                newest.state,
                newest.last_error.as_deref().unwrap_or("no error recorded")
            )),
            _ => None,
        })
    }

    /// Deployments that only an operator can finish: `leftovers` (machines that may
    /// still exist at the provider), `degraded` ones (too many unhealthy nodes to
    /// repair) and teardowns whose job died.
    pub async fn needing_attention(&self) -> Result<Vec<Attention>> {
        let found = self.store.deployments_needing_attention().await?;
        Ok(found.into_iter().map(Attention::new).collect())
    }

    /// Everything `lc stuck` lists: stuck jobs, then deployments needing attention,
    /// then hints nobody pops.
    pub async fn stuck(&self, params: &StuckParams) -> Result<Vec<Finding>> {
        let inspector = self.inspector();
        let mut findings = inspector.stuck_jobs(params).await?;
        findings.extend(
            self.needing_attention()
                .await?
                .into_iter()
                .map(Finding::from),
        );
        findings.extend(inspector.stuck_hints(params).await?);
        Ok(findings)
    }
}
