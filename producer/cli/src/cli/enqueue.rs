//! `lc enqueue`.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use lc_shared::config::parse_duration;
use lc_shared::{JobKind, NewJob, Priority};

use super::output;
use lc_producer::Producer;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  lc enqueue noop
  lc enqueue sleep --payload '{\"ms\": 500}' --priority high
  lc enqueue sleep --payload @job.json --delay 10m --max-attempts 3
  lc enqueue sleep --payload '{\"ms\": 5000}' --timeout 2s   # stopped and retried after 2s
  lc enqueue noop --idempotency-key order-42     # a second call returns the same job
  lc enqueue noop --count 1000                   # one batch, one commit
  lc enqueue noop --retry-for 2m                 # wait out a longer database outage")]
pub struct EnqueueArgs {
    /// Job kind: noop, sleep, provision, provision_machine, deploy, teardown
    pub kind: String,

    /// Payload as JSON, or @FILE to read it from a file
    #[arg(long, default_value = "{}")]
    pub payload: String,

    /// Queue name (a-z, 0-9, '-', '_')
    #[arg(long, default_value = lc_shared::job::DEFAULT_QUEUE)]
    pub queue: String,

    /// high, normal or low
    #[arg(long, default_value = "normal")]
    pub priority: String,

    /// Run at this time (RFC 3339, e.g. 2026-01-31T12:00:00Z)
    #[arg(long, conflicts_with = "delay")]
    pub run_at: Option<DateTime<Utc>>,

    /// Run after this long (500ms, 10s, 5m, 2h)
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<std::time::Duration>,

    /// Attempts before the job is dead
    #[arg(long, default_value_t = lc_shared::job::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: i64,

    /// Time limit of each attempt (default: the kind's, e.g. noop 1m, deploy 30m); an
    /// attempt past it is stopped and fails as retryable
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Enqueueing the same key again returns the existing job instead of a new one
    #[arg(long)]
    pub idempotency_key: Option<String>,

    /// Enqueue this many identical jobs in one batch (not with --idempotency-key)
    #[arg(long, default_value_t = 1, conflicts_with = "idempotency_key")]
    pub count: usize,

    /// Keep retrying this long while the database is unreachable or restarting (never
    /// makes a second job: the job id is chosen before the first try); 0 to fail fast
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub retry_for: std::time::Duration,

    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

fn read_payload(text: &str) -> anyhow::Result<serde_json::Value> {
    let raw = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(PathBuf::from(path))
            .with_context(|| format!("cannot read payload file {path}"))?,
        None => text.to_owned(),
    };
    if raw.len() > lc_shared::job::MAX_PAYLOAD_BYTES {
        anyhow::bail!(
            "invalid job: payload is {} bytes, over the {} byte limit",
            raw.len(),
            lc_shared::job::MAX_PAYLOAD_BYTES
        );
    }
    serde_json::from_str(&raw)
        .map_err(|err| anyhow::anyhow!("invalid job: payload is not valid JSON: {err}"))
}

pub async fn run(producer: &Producer, args: EnqueueArgs) -> anyhow::Result<i32> {
    let kind: JobKind = producer
        .kinds()
        .parse(&args.kind)
        .map_err(|err| anyhow::anyhow!("invalid job: {err}"))?;
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|err| anyhow::anyhow!("invalid job: {err}"))?;
    let payload = read_payload(&args.payload)?;
    if args.count == 0 || args.count > 100_000 {
        anyhow::bail!("--count must be between 1 and 100000");
    }
    let run_at = match (args.run_at, args.delay) {
        (Some(at), _) => Some(at),
        (None, Some(delay)) => Some(Utc::now() + chrono::Duration::from_std(delay)?),
        (None, None) => None,
    };
    let mut job = NewJob::new(kind, payload)
        .with_queue(args.queue)
        .with_priority(priority)
        .with_max_attempts(args.max_attempts);
    job.run_at = run_at;
    job.idempotency_key = args.idempotency_key;
    job.timeout = args.timeout;
    let jobs = vec![job; args.count];
    let producer = producer.clone().with_retry_for(args.retry_for);
    let enqueued = producer.enqueue_batch(&jobs).await?;
    if args.json {
        let out: Vec<serde_json::Value> = enqueued
            .iter()
            .map(|job| serde_json::json!({ "id": job.id, "created": job.created }))
            .collect();
        if out.len() == 1 {
            output::json(&out[0])?;
        } else {
            output::json(&out)?;
        }
    } else {
        for job in &enqueued {
            if job.created {
                println!("{}", job.id);
            } else {
                println!("{} (already enqueued with this idempotency key)", job.id);
            }
        }
    }
    Ok(0)
}
