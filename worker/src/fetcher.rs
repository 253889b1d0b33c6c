//! One fetch loop per queue: wait for a free slot, pop up to that many hints (highest
//! priority first, blocking without polling), claim those jobs in one statement, and
//! start them. A claim runs beside the loop, so the next hints are popped while it is
//! on its way (`CLAIMS_IN_FLIGHT` at most). When Redis has nothing (or is down), and
//! every `--db-poll-interval` even when busy, it claims due jobs straight from the
//! database, which is how jobs whose hints were lost still run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lc_shared::queue::HintPopper;
use lc_shared::store::{ClaimedJob, ScanBound, error_chain};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::executor;
use crate::handlers::Registry;
use crate::slots::Slot;
use crate::worker::Worker;

/// How long one blocking pop waits before the loop looks around (shutdown, DB poll).
const POP_TIMEOUT: Duration = Duration::from_secs(1);

/// Claims of popped hints in flight at once, per queue. With one, a hint that arrives
/// while a claim is on its way waits for it (a round trip and a commit) before it is
/// even popped; with two, it is claimed right away. More would split batches further
/// for no gain on latency.
const CLAIMS_IN_FLIGHT: u32 = 2;

pub(crate) async fn fetch_loop(
    worker: Arc<Worker>,
    registry: Registry,
    queue_name: String,
    stop: CancellationToken,
) {
    let keys = worker.queue.ready_keys(&queue_name);
    let batch_limit = worker
        .config
        .fetch_batch
        .clamp(1, worker.config.concurrency);
    let mut popper: Option<HintPopper> = None;
    let claims = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT as usize));
    // The lower bound of this queue's database polls (an unbounded one every 30).
    let mut due_scan = ScanBound::new(30);
    let mut last_db_poll = Instant::now();
    // Warn once per Redis outage, not once per second.
    let mut redis_down = false;
    loop {
        // A place for the claim of what this round pops, before its slots: slots wait
        // for it rather than idle in a pop.
        let claim = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            claim = claims.clone().acquire_owned() => match claim {
                Ok(claim) => claim,
                Err(_) => break,
            },
        };
        let first = tokio::select! {
            // Stop wins over a free slot, so an idle worker stops at once.
            biased;
            _ = stop.cancelled() => break,
            slot = Slot::acquire(&worker.permits, &worker.held) => match slot {
                Some(slot) => slot,
                None => break,
            },
        };
        let mut permits = vec![first];
        while permits.len() < batch_limit {
            match Slot::try_acquire(&worker.permits, &worker.held) {
                Some(slot) => permits.push(slot),
                None => break,
            }
        }
        if worker.is_paused(&queue_name) {
            drop(permits);
            pause(&stop, Duration::from_secs(1)).await;
            continue;
        }
        if last_db_poll.elapsed() >= worker.config.db_poll_interval {
            last_db_poll = Instant::now();
            claim_from_database(&worker, &registry, &queue_name, &mut permits, &mut due_scan).await;
            if permits.is_empty() {
                continue;
            }
        }
        let conn = match popper.as_mut() {
            Some(conn) => conn,
            None => match worker.queue.popper().await {
                Ok(conn) => popper.insert(conn),
                Err(err) => {
                    if !redis_down {
                        warn!(queue = %queue_name, error = %error_chain(&err), "redis unavailable; claiming from the database until it is back");
                        redis_down = true;
                    }
                    claim_from_database(
                        &worker,
                        &registry,
                        &queue_name,
                        &mut permits,
                        &mut due_scan,
                    )
                    .await;
                    drop(permits);
                    pause(&stop, Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let popped = conn.pop(&keys, permits.len(), POP_TIMEOUT).await;
        if popped.is_ok() && redis_down {
            info!(queue = %queue_name, "redis is back");
            redis_down = false;
        }
        match popped {
            Ok(Some((key, hints))) => {
                if stop.is_cancelled() {
                    // Popped while shutting down: put them back for another worker.
                    if let Err(err) = worker.queue.return_hints(&key, &hints).await {
                        warn!(error = %error_chain(&err), "could not return hints; the database path will find their jobs");
                    }
                    break;
                }
                let (worker, registry) = (worker.clone(), registry.clone());
                tokio::spawn(async move {
                    claim_hinted(&worker, &registry, &key, hints, &mut permits).await;
                    drop(claim);
                });
            }
            Ok(None) if stop.is_cancelled() => break,
            Ok(None) => {
                // Nothing in Redis: a good moment to look for jobs without hints.
                last_db_poll = Instant::now();
                claim_from_database(&worker, &registry, &queue_name, &mut permits, &mut due_scan)
                    .await;
            }
            Err(err) => {
                if !redis_down {
                    warn!(queue = %queue_name, error = %error_chain(&err), "redis pop failed; claiming from the database until it is back");
                    redis_down = true;
                }
                popper = None;
                claim_from_database(&worker, &registry, &queue_name, &mut permits, &mut due_scan)
                    .await;
                drop(permits);
                pause(&stop, Duration::from_secs(1)).await;
            }
        }
    }
    // Claims still on their way start their jobs before the loop is done, so that
    // shutdown finds every claimed job among the running ones.
    let _ = claims.acquire_many(CLAIMS_IN_FLIGHT).await;
    debug!(queue = %queue_name, "fetcher stopped");
}

async fn pause(stop: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Claims the jobs named by popped hints. Malformed hints are logged and skipped (the
/// database still knows every job); if the claim itself fails, the hints go back.
async fn claim_hinted(
    worker: &Arc<Worker>,
    registry: &Registry,
    key: &str,
    hints: Vec<String>,
    permits: &mut Vec<Slot>,
) {
    let mut ids: Vec<Uuid> = Vec::with_capacity(hints.len());
    for hint in &hints {
        match Uuid::parse_str(hint) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(_) => {
                let shown: String = hint.chars().take(80).collect();
                warn!(list = %key, hint = %shown, "skipping malformed dispatch hint");
            }
        }
    }
    if ids.is_empty() {
        return;
    }
    match worker
        .store
        .claim_by_ids(&ids, worker.id, worker.config.lease)
        .await
    {
        Ok(jobs) => {
            worker.outages.fetcher.ok();
            start(worker, registry, jobs, permits);
        }
        Err(err) => {
            worker
                .outages
                .fetcher
                .failed(&err, "claiming jobs (popped hints go back)");
            if let Err(err) = worker.queue.return_hints(key, &hints).await {
                warn!(error = %error_chain(&err), "could not return hints; the database path will find their jobs");
            }
        }
    }
}

async fn claim_from_database(
    worker: &Arc<Worker>,
    registry: &Registry,
    queue_name: &str,
    permits: &mut Vec<Slot>,
    due_scan: &mut ScanBound,
) {
    match worker
        .store
        .claim_due(
            queue_name,
            permits.len() as i64,
            worker.id,
            worker.config.lease,
            due_scan,
        )
        .await
    {
        Ok(jobs) => {
            worker.outages.fetcher.ok();
            if !jobs.is_empty() {
                debug!(queue = %queue_name, jobs = jobs.len(), "claimed from the database");
            }
            start(worker, registry, jobs, permits);
        }
        Err(err) => worker.outages.fetcher.failed(&err, "claiming jobs"),
    }
}

/// Starts claimed jobs, each holding one of the slots.
fn start(
    worker: &Arc<Worker>,
    registry: &Registry,
    jobs: Vec<ClaimedJob>,
    permits: &mut Vec<Slot>,
) {
    for job in jobs {
        // Claims never exceed the permits asked for; should one ever, the job still
        // runs (a stranded claim would hold its lease by heartbeat forever).
        let permit = permits.pop();
        let cancel = worker.running.insert(job.id, job.attempt);
        worker.tasks.spawn(executor::run_job(
            worker.clone(),
            registry.clone(),
            job,
            cancel,
            permit,
        ));
    }
}
