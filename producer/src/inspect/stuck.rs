//! What needs an operator (`lc stuck`): running jobs whose lease expired unnoticed,
//! whose worker is gone, or that run far past their time limit; due jobs nobody
//! starts (paused queue, no worker, backlog); hints in Redis that nobody pops. Each
//! finding says why and which command fixes it.

use std::collections::HashMap;
use std::time::Duration;

use lc_shared::JobState;
use lc_shared::duration::format_age;
use lc_shared::store::{RunningJob, WaitingJob};
use uuid::Uuid;

use super::{Inspector, Result};

/// Running jobs looked at, at most; the longest running come first.
const RUNNING_SCAN: i64 = 10_000;
/// Due jobs looked at, at most; the longest waiting come first.
const WAITING_SCAN: i64 = 1_000;
/// The expected time of a job whose kind this reader does not know (a kind's default
/// time limit).
const UNKNOWN_KIND_LIMIT: Duration = Duration::from_secs(3600);

/// One thing that needs an operator. Jobs have a `job_id`; other findings (a
/// domain's, or hints nobody pops) name what they are about in `kind` and `queue`.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    pub job_id: Option<Uuid>,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub attempt: i64,
    pub worker: Option<Uuid>,
    /// How long it has been so.
    pub since_secs: f64,
    pub reason: String,
    /// The command that fixes it.
    pub fix: String,
}

/// When something counts as stuck.
#[derive(Clone, Copy, Debug)]
pub struct StuckParams {
    /// How long a due job may wait, or a job may run past its time limit.
    pub older_than: Duration,
    /// A worker whose last heartbeat is older than this counts as gone.
    pub dead_after: Duration,
}

impl Default for StuckParams {
    fn default() -> Self {
        StuckParams {
            older_than: Duration::from_secs(300),
            dead_after: Duration::from_secs(30),
        }
    }
}

impl StuckParams {
    fn dead_after_secs(&self) -> i64 {
        self.dead_after.as_secs_f64().ceil() as i64
    }
}

/// The first eight characters of a worker id, as tables show it.
fn short_id(id: Option<Uuid>) -> String {
    let id = id.map(|id| id.to_string()).unwrap_or_default();
    id.get(..8).unwrap_or(&id).to_owned()
}

impl Inspector {
    /// Everything of the queue core that is stuck: [`Inspector::stuck_jobs`], then
    /// [`Inspector::stuck_hints`].
    pub async fn stuck(&self, params: &StuckParams) -> Result<Vec<Finding>> {
        let mut findings = self.stuck_jobs(params).await?;
        findings.extend(self.stuck_hints(params).await?);
        Ok(findings)
    }

    /// Running jobs, then due queued jobs, that are stuck.
    pub async fn stuck_jobs(&self, params: &StuckParams) -> Result<Vec<Finding>> {
        let mut findings: Vec<Finding> = self
            .store
            .running_jobs(RUNNING_SCAN)
            .await?
            .iter()
            .filter_map(|job| self.running_finding(job, params))
            .collect();
        let older_than_secs = i64::try_from(params.older_than.as_secs()).unwrap_or(i64::MAX);
        let waiting = self
            .store
            .waiting_jobs(older_than_secs, WAITING_SCAN)
            .await?;
        let mut served: HashMap<String, bool> = HashMap::new();
        for job in &waiting {
            let queue_served = match served.get(&job.queue) {
                Some(known) => *known,
                None => {
                    let live = self
                        .store
                        .queue_has_live_worker(&job.queue, params.dead_after_secs())
                        .await?;
                    *served.entry(job.queue.clone()).or_insert(live)
                }
            };
            findings.push(waiting_finding(job, queue_served));
        }
        Ok(findings)
    }

    /// Queues whose hints wait in Redis while no live worker pops them (none when this
    /// reader has no Redis).
    pub async fn stuck_hints(&self, params: &StuckParams) -> Result<Vec<Finding>> {
        let Some(hints) = &self.hints else {
            return Ok(Vec::new());
        };
        let mut findings = Vec::new();
        for (name, _) in self.store.known_queues().await? {
            let waiting = hints.ready_len(&name).await.unwrap_or(0);
            if waiting == 0
                || self
                    .store
                    .queue_has_live_worker(&name, params.dead_after_secs())
                    .await?
            {
                continue;
            }
            findings.push(Finding {
                job_id: None,
                kind: "-".into(),
                queue: name.clone(),
                state: "hint".into(),
                attempt: 0,
                worker: None,
                since_secs: 0.0,
                reason: format!(
                    "{waiting} hint(s) wait in Redis but no live worker pops queue {name}"
                ),
                fix: format!("lc-worker --queues {name}"),
            });
        }
        Ok(findings)
    }

    /// How long a running job is expected to take at most: its own time limit, else
    /// its kind's.
    fn expected(&self, job: &RunningJob) -> Duration {
        job.timeout
            .or_else(|| self.kinds.get(job.kind.as_str()).map(|info| info.timeout))
            .unwrap_or(UNKNOWN_KIND_LIMIT)
    }

    fn running_finding(&self, job: &RunningJob, params: &StuckParams) -> Option<Finding> {
        let worker = short_id(job.lease_owner);
        let gone = job.worker_stopped
            || job
                .worker_heartbeat_age_secs
                .is_none_or(|age| age > params.dead_after.as_secs_f64());
        let requeue = format!("lc jobs requeue {}", job.id);
        let (reason, fix) = if job.lease_expired {
            (
                format!(
                    "lease expired and no sweeper took it back (worker {worker}); is any worker running?"
                ),
                requeue,
            )
        } else if gone {
            let age = job
                .worker_heartbeat_age_secs
                .map(format_age)
                .unwrap_or_else(|| "never".into());
            (
                format!("worker {worker} is gone (last heartbeat {age} ago); lease still held"),
                requeue,
            )
        } else {
            let expected = self.expected(job).as_secs_f64();
            if job.running_secs <= expected + params.older_than.as_secs_f64() {
                return None;
            }
            (
                format!(
                    "running for {}, expected at most {} for {}",
                    format_age(job.running_secs),
                    format_age(expected),
                    job.kind
                ),
                format!("lc jobs show {} ; lc jobs cancel {}", job.id, job.id),
            )
        };
        Some(Finding {
            job_id: Some(job.id),
            kind: job.kind.to_string(),
            queue: job.queue.clone(),
            state: JobState::Running.to_string(),
            attempt: job.attempt,
            worker: job.lease_owner,
            since_secs: job.running_secs,
            reason,
            fix,
        })
    }
}

fn waiting_finding(job: &WaitingJob, served: bool) -> Finding {
    let (reason, fix) = if job.queue_paused {
        (
            format!("queue {} is paused", job.queue),
            format!("lc queues resume {}", job.queue),
        )
    } else if !served {
        (
            format!(
                "due for {} but no live worker serves queue {}",
                format_age(job.due_secs),
                job.queue
            ),
            format!("lc-worker --queues {}", job.queue),
        )
    } else {
        (
            format!(
                "due for {} but not started: backlog larger than the workers drain",
                format_age(job.due_secs)
            ),
            "add workers (docker compose up --scale worker=N) or raise --concurrency".to_owned(),
        )
    };
    Finding {
        job_id: Some(job.id),
        kind: job.kind.to_string(),
        queue: job.queue.clone(),
        state: JobState::Queued.to_string(),
        attempt: job.attempt,
        worker: None,
        since_secs: job.due_secs,
        reason,
        fix,
    }
}
