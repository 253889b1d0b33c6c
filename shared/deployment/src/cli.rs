//! The `lc-worker` command (feature `worker`): flags, tracing, the runtime, signals, and
//! a worker of every built-in kind ([`crate::kinds::registry`]). The `lc-worker` binary
//! (`worker/deployment`) is this, and a binary that needs the same worker with something
//! added (the benchmark's handler-start observer) calls [`main_with`] too.

use clap::Parser;
use lc_worker::Registry;

use crate::kinds::registry;
use crate::runtime::{DeploymentWorker, MachineConfig};
use lc_shared::config::ConnectOpts;
use lc_shared::telemetry::{self, LogFormat};
use lc_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

/// Runs LaunchControl jobs: claims them from Redis hints (or the database), runs their
/// handlers under a lease, and records every outcome in the database.
#[derive(Parser, Debug)]
#[command(name = "lc-worker", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    connect: ConnectOpts,

    #[command(flatten)]
    worker: WorkerConfig,

    #[command(flatten)]
    machines: MachineConfig,

    /// Log format
    #[arg(long, env = "LC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
}

/// Runs `lc-worker` with the registry of every built-in kind, as `customize` leaves
/// it. Stop it with SIGTERM or ctrl-c: it finishes what it runs (within `--grace`) and
/// hands back the rest.
pub fn main_with(customize: impl FnOnce(Registry) -> Registry) -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(lc_worker::THREAD_STACK_BYTES)
        .enable_all()
        .build()?;
    // Trace export sends from this runtime: installed inside it, flushed after the
    // worker stops (SIGTERM included) and before the runtime goes.
    let telemetry = {
        let _inside = runtime.enter();
        telemetry::init(cli.log_format, "info", "lc-worker")
    };
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(lc_shared::shutdown::cancel_on_signal(
            shutdown.clone(),
            "unfinished jobs return when their leases expire",
        ));
        // The deployment handlers' statements use a pool of their own, no larger than
        // the handlers that can run at once.
        let store = cli
            .connect
            .store(cli.worker.concurrency.min(cli.connect.db_pool_size))?;
        let state = DeploymentWorker::new(store, cli.machines)?;
        let registry = customize(registry(state)?);
        lc_worker::run_with(cli.connect, cli.worker, registry, shutdown).await?;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    outcome
}
