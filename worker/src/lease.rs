//! Heartbeats: one statement per interval extends the leases of every job this
//! process holds. A job missing from the answer was taken away (cancelled, or its
//! lease expired and was swept): its handler is stopped at once. The same beat
//! refreshes the worker's own row and the list of paused queues.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::worker::Worker;

pub(crate) async fn heartbeat_loop(worker: Arc<Worker>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(worker.config.heartbeat);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {
                beat(&worker).await;
                worker.pulse.beat();
            }
        }
    }
}

/// One heartbeat; public so tests can drive it.
pub async fn beat(worker: &Worker) {
    let held = worker.running.snapshot();
    match worker
        .store
        .extend_leases(worker.id, &held, worker.config.lease)
        .await
    {
        Ok(still_held) => {
            worker.outages.heartbeat.ok();
            let still_held: HashSet<Uuid> = still_held.into_iter().collect();
            for claim in held {
                if !still_held.contains(&claim.id) && worker.running.cancel(claim.id, claim.attempt)
                {
                    warn!(
                        job.id = %claim.id,
                        job.attempt = claim.attempt,
                        "job no longer held by this worker (cancelled, its lease expired and taken over, or its claim lost in a database crash); stopping its handler"
                    );
                }
            }
        }
        Err(err) => {
            // Nothing else to try this beat: the next one comes soon enough.
            worker.outages.heartbeat.failed(&err, "extending leases");
            return;
        }
    }
    if let Err(err) = worker.store.worker_heartbeat(worker.id).await {
        worker
            .outages
            .heartbeat
            .failed(&err, "recording the worker's heartbeat");
    }
    match worker.store.paused_queues().await {
        Ok(paused) => worker.set_paused(paused.into_iter().collect()),
        Err(err) => worker
            .outages
            .heartbeat
            .failed(&err, "reading paused queues"),
    }
}
