//! The state every task of one worker process shares: its id, the database, Redis, its
//! configuration, the jobs it holds, its slots, metrics and outage tracking. It depends
//! on nothing above it; the `supervisor` module builds it and starts the tasks.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use lc_shared::dispatch::Dispatch;
use lc_shared::queue::{Hints, QueueError};
use lc_shared::store::{ScanBound, Store, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::metrics::Metrics;
use crate::outage::Outages;
use crate::pulse::Pulse;
use crate::running::RunningJobs;

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
    pub queue: Hints,
    pub config: WorkerConfig,
    pub running: RunningJobs,
    pub metrics: Metrics,
    /// Database outages per component, so each is logged once, not once per retry.
    pub outages: Outages,
    /// When the heartbeat loop last came round (the liveness probe).
    pub(crate) pulse: Pulse,
    /// Sends hints for jobs this worker enqueued or released.
    pub dispatch: Dispatch,
    /// Free places among running handlers: `--concurrency` permits.
    pub(crate) permits: Arc<Semaphore>,
    /// Free places among the jobs this worker holds (running, or finished and waiting
    /// for their result to be committed): [`HELD_PER_SLOT`] × `--concurrency`.
    pub(crate) held: Arc<Semaphore>,
    /// Tracks job tasks so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) completions: mpsc::UnboundedSender<crate::slots::Finished>,
    /// Queues an operator paused, refreshed at each heartbeat.
    pub(crate) paused: RwLock<HashSet<String>>,
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
