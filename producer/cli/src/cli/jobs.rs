//! `lc jobs ...`: list, show, wait, cancel, retry, requeue, purge.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use lc_deployment::DeploymentStore as Store;
use lc_shared::JobState;
use lc_shared::config::{ConnectOpts, parse_duration};
use lc_shared::state::Transition;
use lc_shared::store::{CancelOutcome, JobFilter, OperatorResult};
use uuid::Uuid;

use super::{output, store};

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first
    Ls(LsArgs),
    /// A job, its payload and its whole history
    Show {
        id: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Wait until jobs reach a terminal state; exit 1 if any did not succeed
    Wait {
        #[arg(required = true)]
        ids: Vec<Uuid>,
        /// Give up after this long
        #[arg(long, value_parser = parse_duration, default_value = "5m")]
        timeout: Duration,
    },
    /// Cancel a queued or running job (a running job's handler is stopped)
    Cancel { id: Uuid },
    /// Send a dead or cancelled job back to the queue with fresh attempts
    Retry(RetryArgs),
    /// Put a running job whose worker is gone back in the queue now, without waiting
    /// for its lease to expire
    Requeue {
        id: Uuid,
        /// Requeue even if its worker still heartbeats (the old attempt is fenced off)
        #[arg(long)]
        force: bool,
        /// A worker whose last heartbeat is older than this counts as gone
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        dead_after: Duration,
    },
    /// Delete finished jobs and their history (retention), in small batches
    Purge(PurgeArgs),
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// queued, running, succeeded, dead or cancelled
    #[arg(long)]
    pub state: Option<JobState>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    /// Deployment name or id
    #[arg(long)]
    pub deployment: Option<String>,
    /// Only jobs unchanged for this long (10m, 2h)
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Option<Duration>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  lc jobs retry 7f1c...            # one job
  lc jobs retry --state dead       # every dead job
  lc jobs retry --state dead --kind deploy")]
pub struct RetryArgs {
    /// The job to retry
    #[arg(required_unless_present = "state", conflicts_with = "state")]
    pub id: Option<Uuid>,
    /// Retry every job in this state (dead or cancelled)
    #[arg(long)]
    pub state: Option<JobState>,
    /// With --state: only jobs of this kind
    #[arg(long, requires = "state")]
    pub kind: Option<String>,
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// succeeded, dead or cancelled
    #[arg(long)]
    pub state: JobState,
    /// Only jobs finished more than this long ago (e.g. 7d)
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Duration,
    /// Jobs deleted per transaction
    #[arg(long, default_value_t = 500)]
    pub batch: i64,
}

pub async fn run(connect: &ConnectOpts, command: JobsCommand) -> anyhow::Result<i32> {
    let store = store(connect)?;
    match command {
        JobsCommand::Ls(args) => ls(&store, args).await,
        JobsCommand::Show { id, json } => show(&store, id, json).await,
        JobsCommand::Wait { ids, timeout } => wait(&store, &ids, timeout).await,
        JobsCommand::Cancel { id } => match store.cancel(id, "cancelled by operator").await? {
            CancelOutcome::Cancelled { was } => {
                println!("cancelled {id} (was {was})");
                Ok(0)
            }
            CancelOutcome::AlreadyFinished(state) => {
                eprintln!("job {id} is already {state}; nothing to cancel");
                Ok(1)
            }
            CancelOutcome::NotFound => not_found(id),
        },
        JobsCommand::Retry(args) => retry(&store, args).await,
        JobsCommand::Requeue {
            id,
            force,
            dead_after,
        } => requeue(&store, id, force, dead_after).await,
        JobsCommand::Purge(args) => {
            if !args.state.is_terminal() {
                anyhow::bail!(
                    "--state must be succeeded, dead or cancelled (purge never deletes live jobs)"
                );
            }
            let older = i64::try_from(args.older_than.as_secs())?;
            let deleted = store
                .purge(args.state, older, args.batch.clamp(1, 10_000))
                .await?;
            println!("purged {deleted} {} jobs", args.state);
            Ok(0)
        }
    }
}

fn not_found(id: Uuid) -> anyhow::Result<i32> {
    eprintln!("no job {id}");
    Ok(1)
}

async fn ls(store: &Store, args: LsArgs) -> anyhow::Result<i32> {
    let deployment_id = match &args.deployment {
        Some(name) => Some(super::resolve_deployment(store, name).await?),
        None => None,
    };
    let filter = JobFilter {
        state: args.state,
        kind: args.kind,
        queue: args.queue,
        group_id: deployment_id,
        older_than_secs: args.older_than.map(|age| age.as_secs() as i64),
        before: None,
        limit: args.limit.clamp(1, 10_000),
    };
    let jobs = store.list_jobs(&filter).await?;
    if args.json {
        output::json(&jobs)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            vec![
                job.id.to_string(),
                job.kind.to_string(),
                job.queue.clone(),
                job.state.to_string(),
                format!("{}/{}", job.attempt, job.max_attempts),
                output::since(job.updated_at),
                output::short(job.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "KIND",
            "QUEUE",
            "STATE",
            "ATTEMPT",
            "CHANGED",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(0)
}

async fn show(store: &Store, id: Uuid, json: bool) -> anyhow::Result<i32> {
    let Some(mut job) = store.job(id).await? else {
        return not_found(id);
    };
    lc_deployment::redact_secrets(&mut job.payload);
    let events = store.events(id).await?;
    if json {
        output::json(&serde_json::json!({ "job": job, "events": events }))?;
        return Ok(0);
    }
    println!("job        {}", job.id);
    println!("kind       {}", job.kind);
    println!("queue      {} (priority {})", job.queue, job.priority);
    println!("state      {}", job.state);
    println!("attempt    {} of {}", job.attempt, job.max_attempts);
    println!("run at     {}", job.run_at.to_rfc3339());
    if let (Some(owner), Some(expires)) = (job.lease_owner, job.lease_expires_at) {
        println!(
            "lease      worker {owner}, expires {}",
            expires.to_rfc3339()
        );
    }
    if let Some(deployment) = job.group_id {
        println!("deployment {deployment}");
    }
    if let Some(key) = &job.idempotency_key {
        println!("key        {key}");
    }
    if let Some(error) = &job.last_error {
        println!("last error {error}");
    }
    println!("payload    {}", serde_json::to_string(&job.payload)?);
    println!();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            let change = output::change(&event.from_state, &event.to_state, "log");
            vec![
                event.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                event.attempt.to_string(),
                change,
                event
                    .worker_id
                    .map(|id| id.to_string()[..8].to_owned())
                    .unwrap_or_else(|| "-".into()),
                output::short(event.message.as_deref().unwrap_or(""), 100),
            ]
        })
        .collect();
    output::table(&["AT", "ATTEMPT", "CHANGE", "WORKER", "MESSAGE"], &rows);
    Ok(0)
}

async fn wait(store: &Store, ids: &[Uuid], timeout: Duration) -> anyhow::Result<i32> {
    let started = Instant::now();
    loop {
        let states = store.job_states(ids).await?;
        if states.len() < ids.len() {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !states.iter().any(|(found, _)| found == *id))
                .map(ToString::to_string)
                .collect();
            anyhow::bail!("no such job: {}", missing.join(", "));
        }
        if states.iter().all(|(_, state)| state.is_terminal()) {
            let mut failed = 0;
            for (id, state) in &states {
                println!("{id} {state}");
                if *state != JobState::Succeeded {
                    failed += 1;
                }
            }
            return Ok(if failed == 0 { 0 } else { 1 });
        }
        if started.elapsed() > timeout {
            for (id, state) in &states {
                println!("{id} {state}");
            }
            anyhow::bail!("timed out after {timeout:?} waiting for jobs to finish");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn retry(store: &Store, args: RetryArgs) -> anyhow::Result<i32> {
    let ids = match (args.id, args.state) {
        (Some(id), _) => vec![id],
        (None, Some(state)) => {
            if !Transition::Revive.from().contains(&state) {
                anyhow::bail!("--state must be dead or cancelled");
            }
            store
                .job_ids_in_state(state, args.kind.as_deref(), 100_000)
                .await?
        }
        (None, None) => anyhow::bail!("name a job id or --state"),
    };
    let mut retried = 0;
    let mut code = 0;
    for id in &ids {
        match store
            .operator_transition(*id, Transition::Revive, "retried by operator")
            .await?
        {
            OperatorResult::Applied { .. } => retried += 1,
            OperatorResult::NotApplicable(state) => {
                eprintln!("job {id} is {state}; only dead or cancelled jobs can be retried");
                code = 1;
            }
            OperatorResult::NotFound => {
                eprintln!("no job {id}");
                code = 1;
            }
        }
    }
    println!("retried {retried} job(s); workers pick them up within a sweep interval");
    Ok(code)
}

async fn requeue(
    store: &Store,
    id: Uuid,
    force: bool,
    dead_after: Duration,
) -> anyhow::Result<i32> {
    let Some(job) = store.job(id).await? else {
        return not_found(id);
    };
    if job.state != JobState::Running.as_str() {
        eprintln!("job {id} is {}, not running; nothing to requeue", job.state);
        return Ok(1);
    }
    if let (false, Some(owner)) = (force, job.lease_owner) {
        let alive = store.workers(3600).await?.into_iter().any(|worker| {
            worker.id == owner
                && worker.stopped_at.is_none()
                && worker.heartbeat_age_secs < dead_after.as_secs_f64()
        });
        if alive {
            eprintln!(
                "job {id} is held by worker {owner}, which is still heartbeating; \
                 use `lc jobs cancel {id}` to stop it, or --force to requeue anyway"
            );
            return Ok(1);
        }
    }
    match store
        .operator_transition(id, Transition::Requeue, "worker gone")
        .await?
    {
        OperatorResult::Applied { .. } => {
            println!("requeued {id}; a worker picks it up within a sweep interval");
            Ok(0)
        }
        OperatorResult::NotApplicable(state) => {
            eprintln!("job {id} is now {state}; nothing to requeue");
            Ok(1)
        }
        OperatorResult::NotFound => not_found(id),
    }
}
