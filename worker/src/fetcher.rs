//! One fetch loop per queue: wait for a free slot, pop up to that many hints (highest
//! priority first, blocking without polling), claim those jobs in one statement, and
//! start them. A claim runs beside the loop, so the next hints are popped while it is
//! on its way (`CLAIMS_IN_FLIGHT` at most). When Redis has nothing (or is down), and
//! every `--db-poll-interval` even when busy, it claims due jobs straight from the
//! database, which is how jobs whose hints were lost still run.
//!
//! Jobs with a concurrency key are claimed by key (`Store::claim_keyed`): hints that
//! the claim by id left over may name keyed jobs, and the key of each is then claimed,
//! as far as its limit allows; the database poll also claims keys with room.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lc_shared::queue::HintPopper;
use lc_shared::store::{Claim, ClaimedJob, ScanBound, error_chain};
use lc_shared::telemetry::job_trace;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::executor;
use crate::handlers::{ClaimTimes, Registry};
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
    let mut fetcher = Fetcher::new(worker, registry, queue_name, stop);
    while let Round::Again = fetcher.round().await {}
    // Claims still on their way start their jobs before the loop is done, so that
    // shutdown finds every claimed job among the running ones.
    let _ = fetcher.claims.acquire_many(CLAIMS_IN_FLIGHT).await;
    debug!(queue = %fetcher.queue_name, "fetcher stopped");
}

/// Whether the loop goes on.
enum Round {
    Again,
    Stop,
}

/// The state of one queue's fetch loop.
struct Fetcher {
    worker: Arc<Worker>,
    registry: Registry,
    queue_name: String,
    keys: [String; 3],
    batch_limit: usize,
    stop: CancellationToken,
    /// A connection for blocking pops, made when first needed and dropped on error.
    popper: Option<HintPopper>,
    /// Places for claims in flight ([`CLAIMS_IN_FLIGHT`]).
    claims: Arc<Semaphore>,
    /// The lower bound of this queue's database polls (an unbounded one every 30).
    due_scan: ScanBound,
    last_db_poll: Instant,
    /// Warn once per Redis outage, not once per second.
    redis_down: bool,
}

impl Fetcher {
    fn new(
        worker: Arc<Worker>,
        registry: Registry,
        queue_name: String,
        stop: CancellationToken,
    ) -> Fetcher {
        let keys = worker.queue.ready_keys(&queue_name);
        let batch_limit = worker
            .config
            .fetch_batch
            .clamp(1, worker.config.concurrency);
        Fetcher {
            worker,
            registry,
            queue_name,
            keys,
            batch_limit,
            stop,
            popper: None,
            claims: Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT as usize)),
            due_scan: ScanBound::new(30),
            last_db_poll: Instant::now(),
            redis_down: false,
        }
    }

    /// One round: free places, then jobs for them from Redis hints or the database.
    async fn round(&mut self) -> Round {
        let Some((claim, mut permits)) = self.places().await else {
            return Round::Stop;
        };
        if self.worker.is_paused(&self.queue_name) {
            drop(permits);
            pause(&self.stop, Duration::from_secs(1)).await;
            return Round::Again;
        }
        if self.last_db_poll.elapsed() >= self.worker.config.db_poll_interval {
            self.last_db_poll = Instant::now();
            self.claim_from_database(&mut permits).await;
            if permits.is_empty() {
                return Round::Again;
            }
        }
        if self.popper.is_none() {
            match self.worker.queue.popper().await {
                Ok(conn) => self.popper = Some(conn),
                Err(err) => {
                    self.redis_failed(
                        "redis unavailable; claiming from the database until it is back",
                        &err,
                    );
                    self.claim_from_database(&mut permits).await;
                    drop(permits);
                    pause(&self.stop, Duration::from_secs(1)).await;
                    return Round::Again;
                }
            }
        }
        let Some(conn) = self.popper.as_mut() else {
            return Round::Again;
        };
        let popped = conn.pop(&self.keys, permits.len(), POP_TIMEOUT).await;
        let popped_at = now_if_wanted(&self.registry);
        if popped.is_ok() && self.redis_down {
            info!(queue = %self.queue_name, "redis is back");
            self.redis_down = false;
        }
        match popped {
            Ok(Some((key, hints))) => {
                if self.stop.is_cancelled() {
                    // Popped while shutting down: put them back for another worker.
                    if let Err(err) = self.worker.queue.return_hints(&key, &hints).await {
                        warn!(error = %error_chain(&err), "could not return hints; the database path will find their jobs");
                    }
                    return Round::Stop;
                }
                let (worker, registry) = (self.worker.clone(), self.registry.clone());
                let queue_name = self.queue_name.clone();
                tokio::spawn(async move {
                    let popped = Popped {
                        queue: &queue_name,
                        key: &key,
                        hints,
                        at: popped_at,
                    };
                    claim_hinted(&worker, &registry, popped, &mut permits).await;
                    drop(claim);
                });
            }
            Ok(None) if self.stop.is_cancelled() => return Round::Stop,
            Ok(None) => {
                // Nothing in Redis: a good moment to look for jobs without hints.
                self.last_db_poll = Instant::now();
                self.claim_from_database(&mut permits).await;
            }
            Err(err) => {
                self.redis_failed(
                    "redis pop failed; claiming from the database until it is back",
                    &err,
                );
                self.popper = None;
                self.claim_from_database(&mut permits).await;
                drop(permits);
                pause(&self.stop, Duration::from_secs(1)).await;
            }
        }
        Round::Again
    }

    /// A place for the claim of what this round pops, then the free slots (at least
    /// one, at most a batch, gathered by [`Slot::gather`]); `None` once the loop must
    /// stop. The claim's place comes first, so slots wait for it rather than idle in a
    /// pop.
    async fn places(&self) -> Option<(OwnedSemaphorePermit, Vec<Slot>)> {
        let claim = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return None,
            claim = self.claims.clone().acquire_owned() => claim.ok()?,
        };
        let first = tokio::select! {
            // Stop wins over a free slot, so an idle worker stops at once.
            biased;
            _ = self.stop.cancelled() => return None,
            slot = Slot::acquire(&self.worker.permits, &self.worker.held) => slot?,
        };
        let permits = Slot::gather(
            first,
            &self.worker.permits,
            &self.worker.held,
            self.batch_limit,
        )
        .await;
        Some((claim, permits))
    }

    fn redis_failed(&mut self, message: &str, err: &lc_shared::queue::QueueError) {
        if !self.redis_down {
            warn!(queue = %self.queue_name, error = %error_chain(err), "{message}");
            self.redis_down = true;
        }
    }

    async fn claim_from_database(&mut self, permits: &mut Vec<Slot>) {
        claim_from_database(
            &self.worker,
            &self.registry,
            &self.queue_name,
            permits,
            &mut self.due_scan,
        )
        .await;
    }
}

async fn pause(stop: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Hints popped from one queue's list.
struct Popped<'a> {
    queue: &'a str,
    /// The list they came from.
    key: &'a str,
    hints: Vec<String>,
    /// When the pop returned (see [`now_if_wanted`]).
    at: Option<SystemTime>,
}

/// Claims the jobs named by popped hints. Malformed hints are logged and skipped (the
/// database still knows every job); if the claim itself fails, the hints go back.
async fn claim_hinted(
    worker: &Arc<Worker>,
    registry: &Registry,
    popped: Popped<'_>,
    permits: &mut Vec<Slot>,
) {
    let Popped {
        queue,
        key,
        hints,
        at: popped,
    } = popped;
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
    let sent = now_if_wanted(registry);
    match worker
        .store
        .claim_by_ids(&ids, worker.id, worker.config.lease)
        .await
    {
        Ok(jobs) => {
            let times = claim_back(registry, popped, sent);
            worker.outages.fetcher.ok();
            let left: Vec<Uuid> = if jobs.len() < ids.len() {
                let claimed: HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
                ids.into_iter().filter(|id| !claimed.contains(id)).collect()
            } else {
                Vec::new()
            };
            start(worker, registry, jobs, times, permits);
            if !left.is_empty() && !permits.is_empty() {
                claim_keys_of(worker, registry, queue, &left, permits).await;
            }
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

/// Hints the claim by id left over: stale or duplicate ones, and those of jobs with a
/// concurrency key, whose keys are claimed here (as far as their limits allow). A
/// failure leaves keyed jobs to the database poll.
async fn claim_keys_of(
    worker: &Arc<Worker>,
    registry: &Registry,
    queue: &str,
    ids: &[Uuid],
    permits: &mut Vec<Slot>,
) {
    match worker.store.concurrency_keys_of(ids, queue).await {
        Ok(keys) => claim_keys(worker, registry, queue, keys, permits).await,
        Err(err) => worker
            .outages
            .fetcher
            .failed(&err, "looking up the keys of hinted jobs"),
    }
}

/// Claims jobs of each key in turn while this worker has room.
async fn claim_keys(
    worker: &Arc<Worker>,
    registry: &Registry,
    queue: &str,
    keys: Vec<String>,
    permits: &mut Vec<Slot>,
) {
    for key in keys {
        if permits.is_empty() {
            return;
        }
        let sent = now_if_wanted(registry);
        match worker
            .store
            .claim_keyed(
                &key,
                queue,
                permits.len() as i64,
                worker.id,
                worker.config.lease,
            )
            .await
        {
            Ok(jobs) => {
                let times = claim_back(registry, None, sent);
                worker.outages.fetcher.ok();
                start(worker, registry, jobs, times, permits);
            }
            Err(err) => {
                worker
                    .outages
                    .fetcher
                    .failed(&err, "claiming jobs of a concurrency key");
                return;
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
    let sent = now_if_wanted(registry);
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
            let times = claim_back(registry, None, sent);
            worker.outages.fetcher.ok();
            if !jobs.is_empty() {
                debug!(queue = %queue_name, jobs = jobs.len(), "claimed from the database");
            }
            start(worker, registry, jobs, times, permits);
        }
        Err(err) => {
            worker.outages.fetcher.failed(&err, "claiming jobs");
            return;
        }
    }
    if permits.is_empty() {
        return;
    }
    match worker
        .store
        .keys_with_room(queue_name, permits.len() as i64)
        .await
    {
        Ok(keys) => claim_keys(worker, registry, queue_name, keys, permits).await,
        Err(err) => worker
            .outages
            .fetcher
            .failed(&err, "looking for concurrency keys with room"),
    }
}

/// The time now, for the claim spans of traces and the [`ClaimTimes`] of a start
/// observer; `None` (and no clock read) when neither is on.
fn now_if_wanted(registry: &Registry) -> Option<SystemTime> {
    (job_trace::enabled() || registry.observes_starts()).then(SystemTime::now)
}

/// The [`ClaimTimes`] of a claim that just came back: when its hint was popped (`None`
/// for a claim from the database), when it went out, and now.
fn claim_back(
    registry: &Registry,
    popped: Option<SystemTime>,
    sent: Option<SystemTime>,
) -> ClaimTimes {
    ClaimTimes {
        popped,
        sent,
        claimed: now_if_wanted(registry),
    }
}

/// Starts claimed jobs, each holding one of the slots; `times` say when their hint was
/// popped and their claim statement went out and came back (see [`now_if_wanted`]).
fn start(
    worker: &Arc<Worker>,
    registry: &Registry,
    jobs: Vec<ClaimedJob>,
    times: ClaimTimes,
    permits: &mut Vec<Slot>,
) {
    let batch = jobs.len();
    for job in jobs {
        let trace = times
            .sent
            .filter(|_| job_trace::enabled())
            .and_then(|started| {
                job_trace::claimed(&job_trace::Claim {
                    job_id: job.id,
                    kind: job.kind.as_str(),
                    queue: &job.queue,
                    attempt: job.attempt,
                    worker_id: worker.id,
                    traceparent: job.traceparent.as_deref(),
                    started,
                    batch,
                })
            });
        // Claims never exceed the permits asked for; should one ever, the job still
        // runs (a stranded claim would hold its lease by heartbeat forever).
        let permit = permits.pop();
        let Some(cancel) = worker.running.insert(job.claim()) else {
            // Still running (or stopping) here from a claim the database lost: see
            // `running`'s doc. Hand this claim back; the slot is free again.
            drop(permit);
            worker.tasks.spawn(hand_back(worker.clone(), job.claim()));
            continue;
        };
        worker.tasks.spawn(executor::run_job(
            worker.clone(),
            registry.clone(),
            job,
            cancel,
            permit,
            trace,
            times,
        ));
    }
}

/// Releases a claim of a job that this worker still runs from an earlier claim of the
/// same attempt (lost by the database): queued again without counting the attempt.
/// No hint is sent: this worker would only claim it again while the earlier run lasts;
/// the database polls of the workers find it (this one's once that run has ended).
/// Should the release fail, the claim's lease expires and the sweeper does the same.
async fn hand_back(worker: Arc<Worker>, claim: Claim) {
    debug!(job.id = %claim.id, job.attempt = claim.attempt,
           "claimed a job this worker still runs from a claim the database lost; handing it back");
    worker.metrics.claim_handed_back();
    if let Err(err) = worker.store.release(worker.id, &[claim]).await {
        warn!(job.id = %claim.id, error = %error_chain(&err),
              "could not hand a claim back; it returns when its lease expires");
    }
}
