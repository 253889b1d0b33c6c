//! A job kind of your own, run by LaunchControl's worker machinery.
//!
//! A kind is a type: [`JobType`] says what producers and workers agree on (its name,
//! payload type and check, defaults), [`Handler`] says what a worker does with a job of
//! it. Register it next to the queue core's kinds and hand the registry to the worker
//! and its kinds to the producer; wait for the job through the read API. Nothing here
//! touches the store, and nothing of the deployment domain is needed:
//!
//! ```text
//! cargo run -p lc-tests --example custom_kind      # with DATABASE_URL, REDIS_URL set
//! ```
//!
//! It migrates the database, starts a worker in this process, enqueues a `greet` job,
//! waits until it succeeded, shows that a bad payload is refused at enqueue, and stops.
//! Flags and environment variables are `lc-worker`'s (`--help`).

use std::time::Duration;

use anyhow::Context;

use clap::Parser;
use lc_producer::Producer;
use lc_shared::config::ConnectOpts;
use lc_shared::kind::JobType;
use lc_shared::{JobKind, JobState};
use lc_worker::{Handler, JobContext, JobError, Registry, WorkerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The payload of a `greet` job.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Greeting {
    name: String,
}

/// The kind: its name, payload, check and defaults.
struct Greet;

impl JobType for Greet {
    const KIND: JobKind = JobKind::named("greet");
    type Payload = Greeting;
    const MAX_ATTEMPTS: i64 = 3;
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn check(payload: &Greeting) -> Result<(), String> {
        if payload.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        Ok(())
    }
}

/// What a worker does with a `greet` job.
impl Handler for Greet {
    async fn run(context: &JobContext, payload: Greeting) -> Result<(), JobError> {
        context.log(&format!("hello, {}", payload.name)).await;
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "Runs one job of a custom kind through LaunchControl's worker")]
struct Cli {
    #[command(flatten)]
    connect: ConnectOpts,
    #[command(flatten)]
    worker: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let registry = Registry::core()?.with::<Greet>()?;
    let producer = Producer::connect(
        &cli.connect.database_url,
        &cli.connect.redis_url,
        &cli.connect.redis_prefix,
    )
    .await?
    .with_kinds(registry.kinds().clone());
    producer.migrate().await?;

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(lc_worker::run_with(
        cli.connect.clone(),
        cli.worker,
        registry,
        shutdown.clone(),
    ));

    let job = producer
        .enqueue(Greet::job(&Greeting {
            name: "world".into(),
        })?)
        .await?;
    println!("enqueued greet job {}", job.id);
    let waited = producer
        .inspector()
        .wait(&[job.id], Duration::from_secs(30))
        .await?;
    anyhow::ensure!(waited.all_ended, "job {} is not done after 30s", job.id);
    let state = waited.states[0].1.context("the job vanished")?;
    println!("greet job {} {state}", job.id);

    let refused = producer
        .enqueue(Greet::job(&Greeting { name: " ".into() })?)
        .await;
    match refused {
        Err(err) => println!("a bad payload is refused: {err}"),
        Ok(job) => anyhow::bail!("a bad payload was accepted as job {}", job.id),
    }

    shutdown.cancel();
    worker.await??;
    anyhow::ensure!(state == JobState::Succeeded, "the greet job ended {state}");
    Ok(())
}
