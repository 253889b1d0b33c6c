//! The sweeper, run by every worker every `--sweep-interval` (several at once is safe:
//! each step is a conditional update, and a duplicate hint claims nothing):
//! 1. running jobs whose lease expired go back to `queued` (or `dead`) with an event;
//! 2. due queued jobs without a hint (delayed, retried, swept, released, enqueued in a
//!    caller's transaction) get one;
//! 3. a queue whose Redis marker is missing (Redis restarted empty, or was flushed)
//!    is rebuilt: a hint for every due queued job, then the marker.

use std::sync::Arc;

use lc_shared::store::error_chain;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

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

/// One sweep; public so tests can drive it without waiting.
pub async fn sweep(worker: &Worker) -> SweepReport {
    let mut report = SweepReport::default();
    loop {
        match worker.store.expire_leases(SWEEP_BATCH).await {
            Ok(expired) => {
                for (id, state) in &expired {
                    warn!(job.id = %id, to = %state, "lease expired; job taken back");
                }
                worker.metrics.leases_recovered(expired.len());
                report.leases_expired += expired.len();
                if (expired.len() as i64) < SWEEP_BATCH {
                    break;
                }
            }
            Err(err) => {
                warn!(error = %error_chain(&err), "could not expire leases");
                break;
            }
        }
    }
    loop {
        let targets = match worker.store.take_undispatched(SWEEP_BATCH).await {
            Ok(targets) => targets,
            Err(err) => {
                warn!(error = %error_chain(&err), "could not read undispatched jobs");
                break;
            }
        };
        if let Err(err) = worker.queue.push_hints(&targets).await {
            warn!(error = %error_chain(&err), "could not send hints; retrying next sweep");
            let ids: Vec<Uuid> = targets.iter().map(|target| target.id).collect();
            if let Err(err) = worker.store.mark_undispatched(&ids).await {
                warn!(error = %error_chain(&err), "could not unmark jobs; idle workers claim them from the database");
            }
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
                Err(err) => warn!(queue = %queue, error = %err, "could not rebuild queue"),
            },
            // Redis being down is reported by the fetchers; here it only delays the check.
            Err(err) => {
                debug!(queue = %queue, error = %error_chain(&err), "could not check queue marker")
            }
        }
    }
    report
}

/// Sends a hint for every due queued job of `queue`, then sets the marker. Hints that
/// already exist get a duplicate, which claims nothing.
async fn rebuild(worker: &Worker, queue: &str) -> Result<usize, String> {
    let mut after = Uuid::nil();
    let mut sent = 0;
    loop {
        let page = worker
            .store
            .due_queued_page(queue, after, SWEEP_BATCH)
            .await
            .map_err(|err| error_chain(&err))?;
        let Some(last) = page.last() else { break };
        after = last.id;
        worker
            .queue
            .push_hints(&page)
            .await
            .map_err(|err| error_chain(&err))?;
        sent += page.len();
    }
    worker
        .queue
        .set_marker(queue)
        .await
        .map_err(|err| error_chain(&err))?;
    Ok(sent)
}
