//! The `lc` command: argument definitions and dispatch. Each group of subcommands
//! lives in its own module.

mod deploy;
mod enqueue;
mod events;
mod jobs;
mod ops;
pub mod output;

use clap::{Parser, Subcommand};
use lc_deployment::DeploymentStore as Store;
use lc_shared::config::ConnectOpts;
use lc_shared::store::error_chain;
use lc_shared::telemetry::LogFormat;

use lc_producer::Producer;

/// LaunchControl: a durable job queue that provisions machines, deploys containers
/// on them and tears them down.
///
/// Jobs live in the database (CockroachDB or PostgreSQL); Redis carries dispatch
/// hints; `lc-worker` processes run them. Start with `lc migrate`, then
/// `lc enqueue noop` and `lc jobs ls`.
#[derive(Parser, Debug)]
#[command(name = "lc", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectOpts,

    /// Log format (logs go to stderr)
    #[arg(long, env = "LC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or update the database schema (safe to run from several places at once)
    Migrate,
    /// Add a job to a queue
    Enqueue(enqueue::EnqueueArgs),
    /// List, inspect, wait for, cancel, retry, requeue and purge jobs
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Jobs that need attention, each with the reason and the command that fixes it
    /// (exit code 3 when anything is listed)
    Stuck(ops::StuckArgs),
    /// Live and recently stopped workers
    Workers(ops::WorkersArgs),
    /// Queue depths and throughput; pause and resume queues
    Queues(ops::QueuesArgs),
    /// Inbox messages that were refused, with the reason
    DeadLetters(ops::DeadLettersArgs),
    /// Deployments: create (provision, then deploy), update, tear down, list, show
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Follow the stream of job and deployment state changes
    #[command(subcommand)]
    Events(events::EventsCommand),
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let connect = cli.connect;
    match cli.command {
        Command::Migrate => {
            let store = store(&connect)?;
            let report = lc_shared::migrate::run(&store).await?;
            println!(
                "migrations: {} applied, {} already there",
                report.applied.len(),
                report.skipped
            );
            Ok(0)
        }
        Command::Enqueue(args) => enqueue::run(&producer(&connect).await?, args).await,
        Command::Jobs(command) => jobs::run(&connect, command).await,
        Command::Stuck(args) => ops::stuck(&connect, args).await,
        Command::Workers(args) => ops::workers(&store(&connect)?, args).await,
        Command::Queues(args) => ops::queues(&connect, args).await,
        Command::DeadLetters(args) => ops::dead_letters(&connect, args).await,
        Command::Deploy(command) => deploy::run(&connect, command).await,
        Command::Events(command) => events::run(&connect, command).await,
    }
}

pub(crate) fn store(connect: &ConnectOpts) -> anyhow::Result<Store> {
    Ok(Store::new(connect.store(4)?))
}

pub(crate) async fn producer(connect: &ConnectOpts) -> anyhow::Result<Producer> {
    Ok(Producer::connect(
        &connect.database_url,
        &connect.redis_url,
        &connect.redis_prefix,
    )
    .await?
    .with_isolation(connect.isolation))
}

/// A deployment named by name or id.
pub(crate) async fn resolve_deployment(store: &Store, name: &str) -> anyhow::Result<uuid::Uuid> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    store
        .deployment_id(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no deployment named {name:?}"))
}

/// The error with its causes, plus a hint when the database is simply not there.
pub fn describe(err: &anyhow::Error) -> String {
    let text = error_chain(err.as_ref());
    if text.contains("Connection refused") || text.contains("connection unavailable") {
        format!(
            "{text}\nhint: is the database running? `scripts/services.sh up` starts one; DATABASE_URL says where to look"
        )
    } else if text.contains("does not exist") && text.contains("relation") {
        format!("{text}\nhint: run `lc migrate` first")
    } else {
        text
    }
}
