//! `lc stuck`, `lc workers`, `lc queues`, `lc dead-letters`: what operators look at.

use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::Deployments;
use lc_producer::Inspector;
use lc_producer::inspect::{Finding, QueueStats, StuckParams};
use lc_shared::config::parse_duration;

use super::output;

#[derive(Args, Debug)]
pub struct StuckArgs {
    /// How long a due job may wait, or a job may run past its time limit (its own, else
    /// its kind's), before it counts as stuck
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub older_than: Duration,
    /// A worker whose last heartbeat is older than this counts as gone
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub dead_after: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// A worker whose last heartbeat is older than this counts as gone
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub dead_after: Duration,
    /// Also list workers stopped or silent within this long
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub recent: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QueuesArgs {
    #[command(subcommand)]
    pub command: Option<QueuesCommand>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// Workers stop taking jobs from this queue (running jobs finish)
    Pause { queue: String },
    /// Workers take jobs from this queue again
    Resume { queue: String },
    /// Concurrency keys: at most LIMIT jobs of KEY run at once, across every worker.
    /// Without LIMIT, lists the keys (or KEY) with their limits and jobs running and
    /// waiting; with --clear, removes KEY's limit. Changes take effect at once.
    Limit {
        /// A concurrency key, e.g. machine:digitalocean:DIGITALOCEAN_ACCESS_TOKEN
        key: Option<String>,
        /// Jobs of the key that may run at once (at least 1)
        limit: Option<i64>,
        /// Remove the key's limit
        #[arg(long, conflicts_with = "limit")]
        clear: bool,
    },
}

#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

pub async fn stuck(deployments: &Deployments, args: StuckArgs) -> anyhow::Result<i32> {
    let params = StuckParams {
        older_than: args.older_than,
        dead_after: args.dead_after,
    };
    let findings = deployments.stuck(&params).await?;
    if args.json {
        output::json(&findings)?;
    } else if findings.is_empty() {
        println!("nothing stuck");
    } else {
        print_findings(&findings);
    }
    Ok(if findings.is_empty() { 0 } else { 3 })
}

fn print_findings(findings: &[Finding]) {
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|finding| {
            vec![
                output::opt(&finding.job_id),
                finding.kind.clone(),
                finding.queue.clone(),
                finding.state.clone(),
                finding.attempt.to_string(),
                output::age(finding.since_secs),
                finding.reason.clone(),
                finding.fix.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "JOB", "KIND", "QUEUE", "STATE", "ATTEMPT", "FOR", "WHY", "FIX",
        ],
        &rows,
    );
}

pub async fn workers(inspector: &Inspector, args: WorkersArgs) -> anyhow::Result<i32> {
    let workers = inspector.workers(args.recent, args.dead_after).await?;
    if args.json {
        output::json(&workers)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|found| {
            let worker = &found.worker;
            vec![
                worker.id.to_string(),
                found.status.as_str().to_owned(),
                worker.host.clone(),
                worker.pid.to_string(),
                worker.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{} ago", output::age(worker.heartbeat_age_secs)),
                worker.queues.clone(),
                worker.running_jobs.to_string(),
                worker.concurrency.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "WORKER",
            "STATUS",
            "HOST",
            "PID",
            "STARTED",
            "HEARTBEAT",
            "QUEUES",
            "RUNNING",
            "CONCURRENCY",
        ],
        &rows,
    );
    Ok(0)
}

/// `lc queues limit [KEY [LIMIT]] [--clear]`.
async fn limits(
    inspector: &Inspector,
    key: Option<String>,
    limit: Option<i64>,
    clear: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let rows = match (key.as_deref(), limit, clear) {
        (Some(key), Some(limit), false) => vec![inspector.set_concurrency_limit(key, limit).await?],
        (Some(key), None, true) => vec![inspector.clear_concurrency_limit(key).await?],
        (None, _, true) => anyhow::bail!("--clear needs the KEY whose limit to remove"),
        (key, _, _) => inspector.concurrency_limits(key).await?,
    };
    if json {
        output::json(&rows)?;
        return Ok(0);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.key.clone(),
                row.limit
                    .map_or_else(|| "-".to_owned(), |limit| limit.to_string()),
                row.running.to_string(),
                row.waiting.to_string(),
            ]
        })
        .collect();
    output::table(&["KEY", "LIMIT", "RUNNING", "WAITING"], &table);
    Ok(0)
}

pub async fn queues(inspector: &Inspector, args: QueuesArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(QueuesCommand::Pause { queue }) => {
            inspector.pause_queue(&queue).await?;
            println!("paused {queue}; workers stop taking its jobs at their next heartbeat");
            return Ok(0);
        }
        Some(QueuesCommand::Resume { queue }) => {
            inspector.resume_queue(&queue).await?;
            println!("resumed {queue}");
            return Ok(0);
        }
        Some(QueuesCommand::Limit { key, limit, clear }) => {
            return limits(inspector, key, limit, clear, args.json).await;
        }
        None => {}
    }
    let stats = inspector.queues().await?;
    if args.json {
        output::json(&stats)?;
    } else {
        print_queues(&stats);
    }
    Ok(0)
}

fn print_queues(stats: &[QueueStats]) {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|row| {
            vec![
                row.queue.clone(),
                if row.paused { "paused" } else { "active" }.to_owned(),
                row.queued.to_string(),
                row.running.to_string(),
                row.succeeded.to_string(),
                row.dead.to_string(),
                row.cancelled.to_string(),
                output::opt(&row.hints_in_redis),
                row.oldest_due_secs
                    .map(output::age)
                    .unwrap_or_else(|| "-".into()),
                format!("{}/min", row.finished_last_minute),
            ]
        })
        .collect();
    output::table(
        &[
            "QUEUE",
            "STATUS",
            "QUEUED",
            "RUNNING",
            "SUCCEEDED",
            "DEAD",
            "CANCELLED",
            "HINTS",
            "OLDEST DUE",
            "THROUGHPUT",
        ],
        &rows,
    );
}

pub async fn dead_letters(inspector: &Inspector, args: DeadLettersArgs) -> anyhow::Result<i32> {
    let letters = inspector.dead_letters(args.limit).await?;
    if args.json {
        output::json(&letters)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|letter| {
            vec![
                letter.id.clone(),
                letter.original_id.clone(),
                output::short(&letter.reason, 70),
                output::short(&letter.body, 60),
            ]
        })
        .collect();
    output::table(&["ID", "INBOX ENTRY", "REASON", "MESSAGE"], &rows);
    Ok(0)
}
