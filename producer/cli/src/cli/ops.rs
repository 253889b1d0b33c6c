//! `lc stuck`, `lc workers`, `lc queues`, `lc dead-letters`: what operators look at.

use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::DeploymentStore as Store;
use lc_shared::config::{ConnectOpts, parse_duration};
use lc_shared::queue::Hints;
use uuid::Uuid;

use lc_deployment::DeploymentState;

use super::{output, store};

#[derive(Args, Debug)]
pub struct StuckArgs {
    /// How long a due job may wait, or a job may run past its expected time, before it
    /// counts as stuck
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
}

#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

/// One finding of `lc stuck`.
#[derive(Debug, serde::Serialize)]
struct Finding {
    job_id: Option<Uuid>,
    kind: String,
    queue: String,
    state: String,
    attempt: i64,
    worker: Option<Uuid>,
    since_secs: f64,
    reason: String,
    fix: String,
}

/// How long a job of `kind` is expected to run at most before it looks stuck.
fn expected_secs(kind: &str, payload: &serde_json::Value) -> f64 {
    match kind {
        "noop" => 60.0,
        "sleep" => payload.get("ms").and_then(|ms| ms.as_f64()).unwrap_or(0.0) / 1000.0 + 60.0,
        "provision_machine" | "deploy" | "teardown" => 30.0 * 60.0,
        "provision" => 60.0 * 60.0,
        _ => 60.0 * 60.0,
    }
}

pub async fn stuck(connect: &ConnectOpts, args: StuckArgs) -> anyhow::Result<i32> {
    let store = store(connect)?;
    let threshold = args.older_than.as_secs_f64();
    let dead_after = args.dead_after.as_secs_f64();
    let mut findings = Vec::new();
    for job in store.running_jobs(10_000).await? {
        let base = |reason: String, fix: String, since: f64| Finding {
            job_id: Some(job.id),
            kind: job.kind.to_string(),
            queue: job.queue.clone(),
            state: "running".into(),
            attempt: job.attempt,
            worker: job.lease_owner,
            since_secs: since,
            reason,
            fix,
        };
        let worker = job.lease_owner.map(|id| id.to_string()).unwrap_or_default();
        let short_worker = worker.get(..8).unwrap_or(&worker).to_owned();
        let gone = job.worker_stopped
            || job
                .worker_heartbeat_age_secs
                .is_none_or(|age| age > dead_after);
        if job.lease_expired {
            findings.push(base(
                format!("lease expired and no sweeper took it back (worker {short_worker}); is any worker running?"),
                format!("lc jobs requeue {}", job.id),
                job.running_secs,
            ));
        } else if gone {
            let age = job
                .worker_heartbeat_age_secs
                .map(output::age)
                .unwrap_or_else(|| "never".into());
            findings.push(base(
                format!(
                    "worker {short_worker} is gone (last heartbeat {age} ago); lease still held"
                ),
                format!("lc jobs requeue {}", job.id),
                job.running_secs,
            ));
        } else {
            let expected = expected_secs(job.kind.as_str(), &job.payload);
            if job.running_secs > expected + threshold {
                findings.push(base(
                    format!(
                        "running for {}, expected at most {} for {}",
                        output::age(job.running_secs),
                        output::age(expected),
                        job.kind
                    ),
                    format!("lc jobs show {} ; lc jobs cancel {}", job.id, job.id),
                    job.running_secs,
                ));
            }
        }
    }
    let waiting = store
        .waiting_jobs(args.older_than.as_secs() as i64, 1000)
        .await?;
    let mut queue_served = std::collections::HashMap::new();
    for job in &waiting {
        if !queue_served.contains_key(&job.queue) {
            let served = store
                .queue_has_live_worker(&job.queue, dead_after.ceil() as i64)
                .await?;
            queue_served.insert(job.queue.clone(), served);
        }
        let served = queue_served[&job.queue];
        let (reason, fix) = if job.queue_paused {
            (
                format!("queue {} is paused", job.queue),
                format!("lc queues resume {}", job.queue),
            )
        } else if !served {
            (
                format!(
                    "due for {} but no live worker serves queue {}",
                    output::age(job.due_secs),
                    job.queue
                ),
                format!("lc-worker --queues {}", job.queue),
            )
        } else {
            (
                format!(
                    "due for {} but not started: backlog larger than the workers drain",
                    output::age(job.due_secs)
                ),
                "add workers (docker compose up --scale worker=N) or raise --concurrency"
                    .to_owned(),
            )
        };
        findings.push(Finding {
            job_id: Some(job.id),
            kind: job.kind.to_string(),
            queue: job.queue.clone(),
            state: "queued".into(),
            attempt: job.attempt,
            worker: None,
            since_secs: job.due_secs,
            reason,
            fix,
        });
    }
    // Deployments that only an operator can finish.
    for found in store.deployments_needing_attention().await? {
        let (reason, fix) = if found.state == DeploymentState::Leftovers {
            (
                format!(
                    "teardown could not confirm machine(s) {} removed: they may still exist at the provider (driver {}); look for machines with these names there",
                    found.abandoned.join(", "),
                    found.driver.as_deref().unwrap_or("?")
                ),
                format!(
                    "delete them at the provider, then: lc deploy ack {}",
                    found.name
                ),
            )
        } else {
            (
                "its teardown job is dead: nothing finishes it; see lc deploy show".to_owned(),
                format!(
                    "lc deploy show {} ; lc deploy teardown {}",
                    found.name, found.name
                ),
            )
        };
        findings.push(Finding {
            job_id: None,
            kind: "deployment".into(),
            queue: found.name.clone(),
            state: found.state.to_string(),
            attempt: 0,
            worker: None,
            since_secs: found.since_secs,
            reason,
            fix,
        });
    }
    // Hints that sit in Redis for queues nobody pops.
    if let Ok(queue) = Hints::connect(&connect.redis_url, &connect.redis_prefix).await {
        for (name, _) in store.known_queues().await? {
            let waiting_hints = queue.ready_len(&name).await.unwrap_or(0);
            if waiting_hints == 0 {
                continue;
            }
            let served = store
                .queue_has_live_worker(&name, dead_after.ceil() as i64)
                .await?;
            if !served {
                findings.push(Finding {
                    job_id: None,
                    kind: "-".into(),
                    queue: name.clone(),
                    state: "hint".into(),
                    attempt: 0,
                    worker: None,
                    since_secs: 0.0,
                    reason: format!(
                        "{waiting_hints} hint(s) wait in Redis but no live worker pops queue {name}"
                    ),
                    fix: format!("lc-worker --queues {name}"),
                });
            }
        }
    }
    if args.json {
        output::json(&findings)?;
    } else if findings.is_empty() {
        println!("nothing stuck");
    } else {
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
    Ok(if findings.is_empty() { 0 } else { 3 })
}

pub async fn workers(store: &Store, args: WorkersArgs) -> anyhow::Result<i32> {
    let workers = store.workers(args.recent.as_secs() as i64).await?;
    if args.json {
        output::json(&workers)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|worker| {
            let status = if worker.stopped_at.is_some() {
                "stopped"
            } else if worker.heartbeat_age_secs > args.dead_after.as_secs_f64() {
                "gone"
            } else {
                "live"
            };
            vec![
                worker.id.to_string(),
                status.to_owned(),
                worker.host.clone(),
                worker.pid.to_string(),
                worker.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                format!("{} ago", output::age(worker.heartbeat_age_secs)),
                worker.queues.clone(),
                format!("{}/{}", worker.running_jobs, worker.concurrency),
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
        ],
        &rows,
    );
    Ok(0)
}

#[derive(Debug, Default, serde::Serialize)]
struct QueueStats {
    queue: String,
    paused: bool,
    queued: i64,
    running: i64,
    succeeded: i64,
    dead: i64,
    cancelled: i64,
    hints_in_redis: Option<i64>,
    oldest_due_secs: Option<f64>,
    finished_last_minute: i64,
}

pub async fn queues(connect: &ConnectOpts, args: QueuesArgs) -> anyhow::Result<i32> {
    let store = store(connect)?;
    match args.command {
        Some(QueuesCommand::Pause { queue }) => {
            lc_shared::job::validate_queue_name(&queue)?;
            store.set_queue_paused(&queue, true).await?;
            println!("paused {queue}; workers stop taking its jobs at their next heartbeat");
            return Ok(0);
        }
        Some(QueuesCommand::Resume { queue }) => {
            lc_shared::job::validate_queue_name(&queue)?;
            store.set_queue_paused(&queue, false).await?;
            println!("resumed {queue}");
            return Ok(0);
        }
        None => {}
    }
    let mut stats: std::collections::BTreeMap<String, QueueStats> =
        std::collections::BTreeMap::new();
    for (queue, paused) in store.known_queues().await? {
        stats
            .entry(queue.clone())
            .or_insert_with(|| QueueStats {
                queue,
                ..QueueStats::default()
            })
            .paused = paused;
    }
    for depth in store.job_counts().await? {
        let row = stats
            .entry(depth.queue.clone())
            .or_insert_with(|| QueueStats {
                queue: depth.queue.clone(),
                ..QueueStats::default()
            });
        match depth.state.as_str() {
            "queued" => row.queued = depth.count,
            "running" => row.running = depth.count,
            "succeeded" => row.succeeded = depth.count,
            "dead" => row.dead = depth.count,
            "cancelled" => row.cancelled = depth.count,
            _ => {}
        }
    }
    for (queue, age) in store.oldest_due_ages().await? {
        if let Some(row) = stats.get_mut(&queue) {
            row.oldest_due_secs = Some(age);
        }
    }
    for (queue, count) in store.finished_last_minute().await? {
        if let Some(row) = stats.get_mut(&queue) {
            row.finished_last_minute = count;
        }
    }
    if let Ok(redis) = Hints::connect(&connect.redis_url, &connect.redis_prefix).await {
        for row in stats.values_mut() {
            row.hints_in_redis = redis.ready_len(&row.queue).await.ok();
        }
    }
    let stats: Vec<QueueStats> = stats.into_values().collect();
    if args.json {
        output::json(&stats)?;
        return Ok(0);
    }
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
    Ok(0)
}

pub async fn dead_letters(connect: &ConnectOpts, args: DeadLettersArgs) -> anyhow::Result<i32> {
    let queue = Hints::connect(&connect.redis_url, &connect.redis_prefix).await?;
    let letters = queue.dead_letters(args.limit).await?;
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
