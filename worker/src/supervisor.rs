//! One worker process: connects, registers, starts its tasks (a fetcher per queue, the
//! completer, heartbeat, sweeper, inbox ingester, event relay, metrics server), and on shutdown stops
//! fetching, lets running jobs finish within the grace period, then hands back what is
//! left so another worker starts it at once. Nothing imports this module: it is the top.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lc_shared::config::ConnectOpts;
use lc_shared::dispatch::Dispatch;
use lc_shared::queue::Hints;
use lc_shared::store::{ScanBound, WorkerInfo, error_chain};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::handlers::Registry;
use crate::metrics::Metrics;
use crate::outage::Outages;
use crate::pulse::Pulse;
use crate::running::RunningJobs;
use crate::slots::Finished;
use crate::worker::{HELD_PER_SLOT, Worker, WorkerError};
use crate::{completer, fetcher, inbox, lease, relay, sweeper};

/// Runs a worker of the kinds of `registry` until `shutdown` is cancelled, then shuts
/// down gracefully.
pub async fn run_with(
    opts: ConnectOpts,
    config: WorkerConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    check_config(&config, &registry)?;
    let (worker, completion_rx) = connect(&opts, config).await?;
    let id = worker.id;
    if !wait_for_database(&worker, &worker_info(&worker), &shutdown).await? {
        info!(worker.id = %id, "stopped before the database answered");
        return Ok(());
    }
    warn_about_cockroachdb_settings(&worker).await;
    info!(
        worker.id = %id,
        queues = %worker.config.queues.join(","),
        concurrency = worker.config.concurrency,
        "worker started"
    );
    let tasks = Tasks::start(&worker, &registry, completion_rx).await?;
    shutdown.cancelled().await;
    tasks.stop(&worker).await;
    if let Err(err) = worker.store.worker_stopped(worker.id).await {
        warn!(error = %error_chain(&err), "could not mark worker stopped");
    }
    info!(worker.id = %id, "worker stopped");
    Ok(())
}

/// Settings that only the registry can check.
fn check_config(config: &WorkerConfig, registry: &Registry) -> Result<(), WorkerError> {
    config.validate().map_err(WorkerError::Config)?;
    for (kind, _) in &config.kind_timeouts {
        if registry.kinds().get(kind).is_none() {
            return Err(WorkerError::Config(format!(
                "--kind-timeout names unknown kind {kind:?} (this worker runs: {})",
                registry.kinds().names().join(", ")
            )));
        }
    }
    Ok(())
}

/// The shared state of a new worker process, and the receiving end of its completions.
async fn connect(
    opts: &ConnectOpts,
    config: WorkerConfig,
) -> Result<(Arc<Worker>, mpsc::UnboundedReceiver<Finished>), WorkerError> {
    let store = opts.store(opts.db_pool_size)?;
    let queue = Hints::connect(&opts.redis_url, &opts.redis_prefix).await?;
    let dispatch = Dispatch::new(store.clone(), Some(queue.clone()));
    let (completions, completion_rx) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        id: Uuid::new_v4(),
        store,
        queue,
        permits: Arc::new(Semaphore::new(config.concurrency)),
        held: Arc::new(Semaphore::new(config.concurrency * HELD_PER_SLOT)),
        config,
        running: RunningJobs::default(),
        metrics: Metrics::default(),
        outages: Outages::default(),
        pulse: Pulse::default(),
        dispatch,
        tasks: TaskTracker::new(),
        completions,
        paused: RwLock::new(HashSet::new()),
        lease_scan: std::sync::Mutex::new(ScanBound::new(sweeper::FULL_SCAN_EVERY)),
        undispatched_scan: std::sync::Mutex::new(ScanBound::new(sweeper::FULL_SCAN_EVERY)),
    });
    Ok((worker, completion_rx))
}

/// How the worker registers itself (what `lc workers` shows).
fn worker_info(worker: &Worker) -> WorkerInfo {
    WorkerInfo {
        id: worker.id,
        host: hostname(),
        pid: i64::from(std::process::id()),
        queues: worker.config.queues.clone(),
        concurrency: worker.config.concurrency as i64,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

async fn warn_about_cockroachdb_settings(worker: &Worker) {
    match worker.store.is_cockroachdb().await {
        Ok(true) => {
            for warning in worker.config.cockroachdb_warnings() {
                warn!("{warning}");
            }
        }
        Ok(false) => {}
        Err(err) => warn!(error = %error_chain(&err), "could not read the database's version"),
    }
}

/// The tasks of one worker process, in the order they stop: fetchers and the inbox
/// first; heartbeat and sweeper keep going until the running jobs are finished or
/// released; the completer drains last.
struct Tasks {
    stop_fetching: CancellationToken,
    fetchers: JoinSet<()>,
    stop_background: CancellationToken,
    background: JoinSet<()>,
    drain_completions: CancellationToken,
    completer: tokio::task::JoinHandle<()>,
}

impl Tasks {
    async fn start(
        worker: &Arc<Worker>,
        registry: &Registry,
        completion_rx: mpsc::UnboundedReceiver<Finished>,
    ) -> Result<Tasks, WorkerError> {
        let stop_fetching = CancellationToken::new();
        let mut fetchers = JoinSet::new();
        for queue_name in worker.config.queues.clone() {
            fetchers.spawn(fetcher::fetch_loop(
                worker.clone(),
                registry.clone(),
                queue_name,
                stop_fetching.clone(),
            ));
        }
        if !worker.config.no_inbox {
            fetchers.spawn(inbox::inbox_loop(
                worker.clone(),
                registry.kinds().clone(),
                stop_fetching.clone(),
            ));
        }
        let stop_background = CancellationToken::new();
        let mut background = JoinSet::new();
        background.spawn(lease::heartbeat_loop(
            worker.clone(),
            stop_background.clone(),
        ));
        background.spawn(sweeper::sweep_loop(worker.clone(), stop_background.clone()));
        if !worker.config.events.no_events {
            background.spawn(relay::relay_loop(
                worker.clone(),
                registry.clone(),
                stop_background.clone(),
            ));
        }
        if let Some(addr) = worker.config.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(WorkerError::Metrics)?;
            let addr = listener.local_addr().map_err(WorkerError::Metrics)?;
            if let Some(file) = &worker.config.metrics_addr_file {
                write_addr_file(file, addr).map_err(WorkerError::Metrics)?;
            }
            info!(%addr, "serving metrics, /healthz and /readyz");
            background.spawn(crate::metrics_server::serve(
                worker.clone(),
                listener,
                stop_fetching.clone(),
                stop_background.clone(),
            ));
        }
        let drain_completions = CancellationToken::new();
        let completer = tokio::spawn(completer::completer_loop(
            worker.clone(),
            completion_rx,
            drain_completions.clone(),
        ));
        Ok(Tasks {
            stop_fetching,
            fetchers,
            stop_background,
            background,
            drain_completions,
            completer,
        })
    }

    /// Stops fetching, lets running jobs finish within the grace period, records what
    /// finished, hands back the rest, then stops the background tasks.
    async fn stop(mut self, worker: &Arc<Worker>) {
        info!(running = worker.running.len(), grace = ?worker.config.grace, "shutting down: no new jobs");
        self.stop_fetching.cancel();
        while self.fetchers.join_next().await.is_some() {}
        wait_for_handlers(worker).await;
        self.drain_completions.cancel();
        if let Err(err) = self.completer.await {
            warn!(error = %err, "completer task failed");
        }
        release_unfinished(worker).await;
        self.stop_background.cancel();
        while self.background.join_next().await.is_some() {}
    }
}

/// Writes `addr` to `file` whole (a reader never sees half of it): a temporary file
/// beside it, renamed over it.
fn write_addr_file(file: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, format!("{addr}\n"))?;
    std::fs::rename(&partial, file)
}

/// Waits for running handlers within the grace period; past it, cancels them. A
/// draining worker (`--drain`) waits for them however long they take.
async fn wait_for_handlers(worker: &Worker) {
    worker.tasks.close();
    if worker.config.drain {
        info!(
            running = worker.running.len(),
            "draining: waiting for the running jobs to finish"
        );
        worker.tasks.wait().await;
        return;
    }
    if tokio::time::timeout(worker.config.grace, worker.tasks.wait())
        .await
        .is_err()
    {
        let stopped = worker.running.cancel_all();
        warn!(
            jobs = stopped,
            "grace period over: stopping handlers and releasing their jobs"
        );
        if tokio::time::timeout(Duration::from_secs(10), worker.tasks.wait())
            .await
            .is_err()
        {
            warn!("some handlers did not stop within 10s of cancellation");
        }
    }
}

/// Hands the jobs still held back to their queues, so another worker starts them at
/// once (they would come back anyway when their leases expire).
async fn release_unfinished(worker: &Worker) {
    let left = worker.running.snapshot();
    if left.is_empty() {
        return;
    }
    match worker.store.release(worker.id, &left).await {
        Ok(released) => {
            worker.dispatch.send(&released).await;
            info!(
                jobs = released.len(),
                "released unfinished jobs to the queue"
            );
        }
        Err(err) => warn!(
            error = %error_chain(&err),
            jobs = left.len(),
            "could not release jobs; they return when their leases expire"
        ),
    }
}

/// First backoff between tries of a worker that starts while the database is down.
const START_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest backoff between those tries: short, so work starts soon after the database
/// is back (the tries are logged once per outage, so they cost no log lines).
const START_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Registers the worker, waiting for a database that is down or restarting: a worker
/// started during an outage says what it waits for (once), retries with backoff and
/// starts work when the database answers. It gives up only on a signal (returns false)
/// or on an error the database answered with (a missing schema, bad credentials),
/// which waiting cannot fix.
async fn wait_for_database(
    worker: &Worker,
    info: &WorkerInfo,
    shutdown: &CancellationToken,
) -> Result<bool, WorkerError> {
    let mut backoff = START_BACKOFF_MIN;
    loop {
        let registered = async {
            worker.store.register_worker(info).await?;
            worker.store.paused_queues().await
        };
        match registered.await {
            Ok(paused) => {
                worker.outages.start.ok();
                worker.set_paused(paused.into_iter().collect());
                return Ok(true);
            }
            Err(err) if err.is_unavailable() => worker.outages.start.failed(&err, "starting work"),
            Err(err) => return Err(err.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(START_BACKOFF_MAX);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}
