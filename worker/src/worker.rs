//! One worker process: connects, registers, starts its tasks (a fetcher per queue,
//! the completer, heartbeat, sweeper, inbox ingester), and on shutdown stops fetching,
//! lets running jobs finish within the grace period, then hands back what is left so
//! another worker starts it at once.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lc_shared::config::ConnectOpts;
use lc_shared::queue::{Queue, QueueError};
use lc_shared::secrets::SecretKey;
use lc_shared::store::{ScanBound, Store, StoreError, WorkerInfo, error_chain};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::outage::Outages;
use crate::running::RunningJobs;
use crate::{completer, fetcher, inbox, lease, sweeper};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("could not serve metrics")]
    Metrics(#[source] std::io::Error),
}

/// Jobs a worker may hold per place of `--concurrency`: handlers run `concurrency` at a
/// time, and finished jobs wait for their batched commit within the rest, which lets
/// completions batch without an unbounded backlog.
pub const HELD_PER_SLOT: usize = 8;

/// Everything the tasks of one worker process share.
pub struct Worker {
    pub id: Uuid,
    pub store: Store,
    pub queue: Queue,
    pub config: WorkerConfig,
    pub running: RunningJobs,
    pub metrics: Metrics,
    /// Seals and opens docker-machine state (`LC_SECRET_KEY`); `None` when not set, and
    /// then docker-machine jobs fail with an error that says so.
    pub secret_key: Option<SecretKey>,
    /// Database outages per component, so each is logged once, not once per retry.
    pub outages: Outages,
    /// Free places among running handlers: `--concurrency` permits.
    pub(crate) permits: Arc<Semaphore>,
    /// Free places among the jobs this worker holds (running, or finished and waiting
    /// for their result to be committed): [`HELD_PER_SLOT`] × `--concurrency`.
    pub(crate) held: Arc<Semaphore>,
    /// Tracks job tasks so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) completions: mpsc::UnboundedSender<crate::completer::Finished>,
    /// Queues an operator paused, refreshed at each heartbeat.
    paused: RwLock<HashSet<String>>,
    /// Lower bounds of the sweeper's scans of `jobs_running_lease` and
    /// `jobs_undispatched` (see [`ScanBound`]).
    pub(crate) lease_scan: std::sync::Mutex<ScanBound>,
    pub(crate) undispatched_scan: std::sync::Mutex<ScanBound>,
}

impl Worker {
    pub fn is_paused(&self, queue: &str) -> bool {
        self.paused
            .read()
            .map(|paused| paused.contains(queue))
            .unwrap_or(false)
    }

    pub(crate) fn set_paused(&self, queues: HashSet<String>) {
        if let Ok(mut paused) = self.paused.write() {
            *paused = queues;
        }
    }
}

/// Runs a worker until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(
    opts: ConnectOpts,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    config.validate().map_err(WorkerError::Config)?;
    let secret_key = SecretKey::from_env().map_err(|err| WorkerError::Config(err.to_string()))?;
    let stale = crate::machine_store::remove_stale(&config.machines_dir);
    if stale > 0 {
        info!(removed = stale, dir = %config.machines_dir.display(), "removed scratch stores left by killed workers");
    }
    let store = opts.store(opts.db_pool_size)?;
    let queue = Queue::connect(&opts.redis_url, &opts.redis_prefix).await?;
    let id = Uuid::new_v4();
    let (completions, completion_rx) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        id,
        store,
        queue,
        permits: Arc::new(Semaphore::new(config.concurrency)),
        held: Arc::new(Semaphore::new(config.concurrency * HELD_PER_SLOT)),
        config,
        running: RunningJobs::default(),
        metrics: Metrics::default(),
        secret_key,
        outages: Outages::default(),
        tasks: TaskTracker::new(),
        completions,
        paused: RwLock::new(HashSet::new()),
        lease_scan: std::sync::Mutex::new(ScanBound::new(crate::sweeper::FULL_SCAN_EVERY)),
        undispatched_scan: std::sync::Mutex::new(ScanBound::new(crate::sweeper::FULL_SCAN_EVERY)),
    });
    let info = WorkerInfo {
        id,
        host: hostname(),
        pid: i64::from(std::process::id()),
        queues: worker.config.queues.clone(),
        concurrency: worker.config.concurrency as i64,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    if !wait_for_database(&worker, &info, &shutdown).await? {
        info!(worker.id = %id, "stopped before the database answered");
        return Ok(());
    }
    match worker.store.is_cockroachdb().await {
        Ok(true) => {
            for warning in worker.config.cockroachdb_warnings() {
                warn!("{warning}");
            }
        }
        Ok(false) => {}
        Err(err) => warn!(error = %error_chain(&err), "could not read the database's version"),
    }
    info!(
        worker.id = %id,
        queues = %worker.config.queues.join(","),
        concurrency = worker.config.concurrency,
        "worker started"
    );

    // Fetchers and the inbox stop first; heartbeat and sweeper keep going until the
    // running jobs are finished or released; the completer drains last.
    let stop_fetching = CancellationToken::new();
    let stop_background = CancellationToken::new();
    let drain_completions = CancellationToken::new();
    let mut fetchers = tokio::task::JoinSet::new();
    for queue_name in worker.config.queues.clone() {
        fetchers.spawn(fetcher::fetch_loop(
            worker.clone(),
            queue_name,
            stop_fetching.clone(),
        ));
    }
    if !worker.config.no_inbox {
        fetchers.spawn(inbox::inbox_loop(worker.clone(), stop_fetching.clone()));
    }
    let mut background = tokio::task::JoinSet::new();
    background.spawn(lease::heartbeat_loop(
        worker.clone(),
        stop_background.clone(),
    ));
    background.spawn(sweeper::sweep_loop(worker.clone(), stop_background.clone()));
    if let Some(addr) = worker.config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(WorkerError::Metrics)?;
        info!(%addr, "serving metrics");
        background.spawn(crate::metrics::serve(
            worker.clone(),
            listener,
            stop_background.clone(),
        ));
    }
    let completer = tokio::spawn(completer::completer_loop(
        worker.clone(),
        completion_rx,
        drain_completions.clone(),
    ));

    shutdown.cancelled().await;
    info!(running = worker.running.len(), grace = ?worker.config.grace, "shutting down: no new jobs");
    stop_fetching.cancel();
    while fetchers.join_next().await.is_some() {}

    worker.tasks.close();
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
    drain_completions.cancel();
    if let Err(err) = completer.await {
        warn!(error = %err, "completer task failed");
    }

    let left = worker.running.snapshot();
    if !left.is_empty() {
        match worker.store.release(worker.id, &left).await {
            Ok(released) => {
                if let Err(err) = worker.queue.push_hints(&released).await {
                    // The sweeper's database path picks them up anyway.
                    warn!(error = %error_chain(&err), "could not send hints for released jobs");
                }
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
    stop_background.cancel();
    while background.join_next().await.is_some() {}
    if let Err(err) = worker.store.worker_stopped(worker.id).await {
        warn!(error = %error_chain(&err), "could not mark worker stopped");
    }
    info!(worker.id = %id, "worker stopped");
    Ok(())
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
