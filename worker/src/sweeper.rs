//! The sweeper, run by every worker every `--sweep-interval` (several at once is safe:
//! each step is a conditional update, and a duplicate hint claims nothing):
//! 1. running jobs whose lease expired go back to `queued` (or `dead`) with an event,
//!    and the concurrency keys whose slots they held get hints for their waiting jobs;
//! 2. due queued jobs without a hint (delayed, retried, swept, released, enqueued in a
//!    caller's transaction) get one;
//! 3. a queue whose Redis marker is missing (Redis restarted empty, or was flushed)
//!    is rebuilt: a hint for every due queued job, then the marker.

use std::sync::Arc;
use std::time::Duration;

use lc_shared::queue::QueueError;
use lc_shared::store::{ScanBound, StoreError, error_chain};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::keyed;
use crate::worker::Worker;

/// Rows one sweep step handles per statement.
const SWEEP_BATCH: i64 = 1000;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub leases_expired: usize,
    pub hints_sent: usize,
    pub queues_rebuilt: Vec<String>,
}

pub(crate) async fn sweep_loop(worker: Arc<Worker>, stop: CancellationToken) {
    loop {
        // Jitter keeps the sweepers of many workers from running in lockstep.
        let jitter = (uuid::Uuid::new_v4().as_u128() % 400) as f64 / 1000.0 + 0.8;
        let wait = worker.config.sweep_interval.mul_f64(jitter);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let report = sweep(&worker).await;
        if report != SweepReport::default() {
            debug!(?report, "sweep");
        }
    }
}

/// Every this many sweeps, the scans for expired leases and undispatched jobs start at
/// the oldest end of their index instead of their lower bound (see [`ScanBound`]).
pub(crate) const FULL_SCAN_EVERY: u32 = 60;

fn scan_bound(cell: &std::sync::Mutex<ScanBound>) -> ScanBound {
    match cell.lock() {
        Ok(bound) => *bound,
        Err(poisoned) => *poisoned.into_inner(),
    }
}

fn set_scan_bound(cell: &std::sync::Mutex<ScanBound>, bound: ScanBound) {
    match cell.lock() {
        Ok(mut slot) => *slot = bound,
        Err(poisoned) => *poisoned.into_inner() = bound,
    }
}

/// Sweep step 1: expired leases back to `queued` (or `dead`); returns how many.
async fn expire_leases(worker: &Worker) -> usize {
    let mut expired_count = 0;
    loop {
        let mut bound = scan_bound(&worker.lease_scan);
        let expired = worker.store.expire_leases(SWEEP_BATCH, &mut bound).await;
        set_scan_bound(&worker.lease_scan, bound);
        match expired {
            Ok(expired) => {
                worker.outages.sweeper.ok();
                for lease in &expired {
                    warn!(job.id = %lease.id, to = %lease.state, "lease expired; job taken back");
                }
                worker.metrics.leases_recovered(expired.len());
                expired_count += expired.len();
                let done = (expired.len() as i64) < SWEEP_BATCH;
                let freed = expired
                    .into_iter()
                    .filter_map(|lease| lease.concurrency_key);
                keyed::hint_freed(worker, freed).await;
                if done {
                    break;
                }
            }
            Err(err) => {
                worker.outages.sweeper.failed(&err, "expiring leases");
                break;
            }
        }
    }
    expired_count
}

/// Whether lease expiry waits this sweep. A database outage (a restart, a failover)
/// stops every worker's heartbeats while database time runs on: a failover longer than
/// a lease less a heartbeat would let the first sweeper back expire every healthy lease
/// at once, and their jobs would all run again. So after an outage, seen by this
/// worker's sweeper or heartbeat, expiry waits two heartbeats (and the retry helper's
/// longest backoff) for the live workers' heartbeats to extend their leases again
/// (an expired lease not yet swept is extended like any other). A worker that died
/// during the outage loses its leases that much later. While the sweeper itself still
/// finds the database away, a clock read tells it when it is back.
async fn leases_wait_after_an_outage(worker: &Worker) -> bool {
    if worker.outages.sweeper.is_down() {
        match worker.store.database_now().await {
            Ok(_) => worker.outages.sweeper.ok(),
            Err(err) => worker.outages.sweeper.failed(&err, "expiring leases"),
        }
    }
    let window = worker.config.heartbeat * 2 + Duration::from_secs(1);
    worker.outages.sweeper.down_or_back_within(window)
        || worker.outages.heartbeat.down_or_back_within(window)
}

/// One sweep; public so tests can drive it without waiting.
pub async fn sweep(worker: &Worker) -> SweepReport {
    let mut report = SweepReport::default();
    if leases_wait_after_an_outage(worker).await {
        debug!("the database was away: lease expiry waits for the workers' heartbeats");
    } else {
        report.leases_expired = expire_leases(worker).await;
    }
    loop {
        let mut bound = scan_bound(&worker.undispatched_scan);
        let taken = worker
            .store
            .take_undispatched(SWEEP_BATCH, &mut bound)
            .await;
        set_scan_bound(&worker.undispatched_scan, bound);
        let targets = match taken {
            Ok(targets) => targets,
            Err(err) => {
                worker.outages.sweeper.failed(&err, "dispatching due jobs");
                break;
            }
        };
        if !worker.dispatch.send(&targets).await {
            // Handed back: the next sweep tries again.
            break;
        }
        report.hints_sent += targets.len();
        if (targets.len() as i64) < SWEEP_BATCH {
            break;
        }
    }
    for queue in &worker.config.queues {
        match worker.queue.has_marker(queue).await {
            Ok(true) => {}
            Ok(false) => match rebuild(worker, queue).await {
                Ok(hints) => {
                    if hints > 0 {
                        info!(queue = %queue, hints, "redis had lost this queue; rebuilt its hints from the database");
                    }
                    report.hints_sent += hints;
                    report.queues_rebuilt.push(queue.clone());
                }
                Err(RebuildError::Store(err)) => {
                    worker.outages.sweeper.failed(&err, "rebuilding a queue")
                }
                Err(RebuildError::Queue(err)) => {
                    warn!(queue = %queue, error = %error_chain(&err), "could not rebuild queue");
                }
            },
            // Redis being down is reported by the fetchers; here it only delays the check.
            Err(err) => {
                debug!(queue = %queue, error = %error_chain(&err), "could not check queue marker")
            }
        }
    }
    report
}

/// Why a rebuild stopped: the database (an outage, logged once) or Redis.
enum RebuildError {
    Store(StoreError),
    Queue(QueueError),
}

/// Sends a hint for every due queued job of `queue`, then sets the marker. Hints that
/// already exist get a duplicate, which claims nothing.
async fn rebuild(worker: &Worker, queue: &str) -> Result<usize, RebuildError> {
    let mut after = Uuid::nil();
    let mut sent = 0;
    loop {
        let page = worker
            .store
            .due_queued_page(queue, after, SWEEP_BATCH)
            .await
            .map_err(RebuildError::Store)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        worker
            .queue
            .push_hints(&page)
            .await
            .map_err(RebuildError::Queue)?;
        sent += page.len();
    }
    worker
        .queue
        .set_marker(queue)
        .await
        .map_err(RebuildError::Queue)?;
    Ok(sent)
}
