//! `lc jobs ...`: list, show, wait, cancel, retry, requeue, purge.

use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::Deployments;
use lc_producer::Inspector;
use lc_producer::inspect::{JobDetail, JobListParams, JobRow, PurgeParams, RequeueParams};
use lc_shared::JobState;
use lc_shared::config::parse_duration;
use uuid::Uuid;

use super::{output, report};

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
    /// Jobs per page (1 to 10000)
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Start after the page that printed this cursor (on stderr, when more jobs follow)
    #[arg(long)]
    pub cursor: Option<String>,
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

pub async fn run(deployments: &Deployments, command: JobsCommand) -> anyhow::Result<i32> {
    let inspector = deployments.inspector();
    match command {
        JobsCommand::Ls(args) => ls(deployments, &inspector, args).await,
        JobsCommand::Show { id, json } => {
            report(inspector.job(id).await, |detail| show(&detail, json))
        }
        JobsCommand::Wait { ids, timeout } => wait(&inspector, &ids, timeout).await,
        JobsCommand::Cancel { id } => report(inspector.cancel(id).await, |done| {
            println!("cancelled {id} (was {})", done.was);
            Ok(())
        }),
        JobsCommand::Retry(args) => retry(&inspector, args).await,
        JobsCommand::Requeue {
            id,
            force,
            dead_after,
        } => {
            let params = RequeueParams { force, dead_after };
            report(inspector.requeue(id, params).await, |_| {
                println!("requeued {id}; a worker picks it up within a sweep interval");
                Ok(())
            })
        }
        JobsCommand::Purge(args) => {
            let params = PurgeParams {
                state: args.state,
                older_than: args.older_than,
                batch: args.batch,
            };
            let purged = inspector.purge(params).await?;
            println!("purged {} {} jobs", purged.deleted, purged.state);
            Ok(0)
        }
    }
}

async fn ls(deployments: &Deployments, inspector: &Inspector, args: LsArgs) -> anyhow::Result<i32> {
    let group = match &args.deployment {
        Some(name) => Some(deployments.resolve(name).await?),
        None => None,
    };
    let params = JobListParams {
        state: args.state,
        kind: args.kind,
        queue: args.queue,
        group,
        older_than: args.older_than,
        limit: args.limit,
        cursor: args.cursor,
    };
    let page = inspector.jobs(&params).await?;
    if args.json {
        output::json(&page.jobs)?;
    } else {
        print_jobs(&page.jobs);
    }
    if let Some(next) = &page.next {
        eprintln!("more jobs follow: --cursor {next}");
    }
    Ok(0)
}

fn print_jobs(jobs: &[JobRow]) {
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
}

fn show(detail: &JobDetail, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(detail);
    }
    let job = &detail.job;
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
    println!("payload    {}", job.payload);
    println!();
    let rows: Vec<Vec<String>> = detail
        .events
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
    Ok(())
}

async fn wait(inspector: &Inspector, ids: &[Uuid], timeout: Duration) -> anyhow::Result<i32> {
    let waited = inspector.wait(ids, timeout).await?;
    let missing: Vec<String> = waited
        .states
        .iter()
        .filter(|(_, state)| state.is_none())
        .map(|(id, _)| id.to_string())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!("no such job: {}", missing.join(", "));
    }
    let mut failed = 0;
    for (id, state) in &waited.states {
        if let Some(state) = state {
            println!("{id} {state}");
            if *state != JobState::Succeeded {
                failed += 1;
            }
        }
    }
    if !waited.all_ended {
        anyhow::bail!("timed out after {timeout:?} waiting for jobs to finish");
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

async fn retry(inspector: &Inspector, args: RetryArgs) -> anyhow::Result<i32> {
    let (retried, code) = match (args.id, args.state) {
        (Some(id), _) => match report(inspector.retry(id).await, |_| Ok(()))? {
            0 => (1, 0),
            code => (0, code),
        },
        (None, Some(state)) => {
            let done = inspector.retry_all(state, args.kind.as_deref()).await?;
            for refusal in &done.refused {
                eprintln!("{refusal}");
            }
            (done.retried.len(), i32::from(!done.refused.is_empty()))
        }
        (None, None) => anyhow::bail!("name a job id or --state"),
    };
    println!("retried {retried} job(s); workers pick them up within a sweep interval");
    Ok(code)
}
