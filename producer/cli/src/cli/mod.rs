//! The `lc` command: argument definitions and dispatch. Each group of subcommands
//! lives in its own module, and each maps its arguments onto the library's public API
//! (`Producer`, its `Inspector`, `Deployments`) and prints the answer.

mod deploy;
mod enqueue;
mod events;
mod health;
mod jobs;
mod ops;
pub mod output;
mod serve;

use clap::{Parser, Subcommand};
use lc_deployment::Deployments;
use lc_producer::{ErrorKind, InspectError, Producer};
use lc_shared::config::ConnectOpts;
use lc_shared::store::error_chain;
use lc_shared::telemetry::LogFormat;

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
    ///
    /// RUNNING counts the jobs whose rows are running under the worker's lease: the
    /// handlers running (at most CONCURRENCY at once) and the finished jobs whose
    /// results wait for their batched commit, so under load it can exceed CONCURRENCY
    /// (a worker holds at most 8 jobs per place of it).
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
    /// Serve the HTTP API (jobs, queues, workers, deployments, events) and the
    /// dashboard, on loopback by default
    Serve(lc_http::ServeArgs),
    /// Tokens of the HTTP API's callers: create (printed once), ls, revoke
    #[command(subcommand)]
    Tokens(serve::TokensCommand),
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let deployments = Deployments::new(producer(&cli.connect).await?);
    match cli.command {
        Command::Migrate => {
            let report = deployments.producer().migrate().await?;
            println!(
                "migrations: {} applied, {} already there",
                report.applied.len(),
                report.skipped
            );
            Ok(0)
        }
        Command::Enqueue(args) => enqueue::run(deployments.producer(), args).await,
        Command::Jobs(command) => jobs::run(&deployments, command).await,
        Command::Stuck(args) => ops::stuck(&deployments, args).await,
        Command::Workers(args) => ops::workers(&deployments.inspector(), args).await,
        Command::Queues(args) => ops::queues(&deployments.inspector(), args).await,
        Command::DeadLetters(args) => ops::dead_letters(&deployments.inspector(), args).await,
        Command::Deploy(command) => deploy::run(&deployments, command).await,
        Command::Events(command) => events::run(&deployments, command).await,
        Command::Serve(args) => serve::serve(&deployments, args).await,
        Command::Tokens(command) => serve::tokens(&deployments, command).await,
    }
}

/// The producer `lc` works through: every built-in kind (the deployment kinds too),
/// the `--isolation` asked for. Connecting is lazy: nothing is opened until used.
async fn producer(connect: &ConnectOpts) -> anyhow::Result<Producer> {
    Ok(Producer::connect(
        &connect.database_url,
        &connect.redis_url,
        &connect.redis_prefix,
    )
    .await?
    .with_isolation(connect.isolation)
    .with_kinds(lc_deployment::kinds::kinds()?))
}

/// The exit code of an operator action: 0 when done (after `done` printed it); 1
/// when refused because what it names does not exist or is in another state (the
/// refusal printed on stderr, as it always was); other errors are errors.
pub(crate) fn report<T>(
    result: Result<T, InspectError>,
    done: impl FnOnce(T) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    match result {
        Ok(value) => {
            done(value)?;
            Ok(0)
        }
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => {
            eprintln!("{err}");
            Ok(1)
        }
        Err(err) => Err(err.into()),
    }
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
