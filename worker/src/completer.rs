//! Records finished runs. Results arrive on a channel and are written in batches: one
//! statement for everything that arrived while earlier batches were being written, so
//! throughput grows with load and an idle worker adds no delay.
//!
//! A finished job keeps its concurrency slot until its result is committed. That is
//! the backpressure: a worker never holds more finished-but-unrecorded jobs than its
//! `--concurrency`, so a slow database slows claiming instead of letting leases of
//! finished jobs pile up (and expire, and run again).
//!
//! A committed result of a job with a concurrency key frees a slot of its key: the
//! completer then sends the hints that start the key's next waiting jobs (see
//! [`crate::keyed`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lc_shared::store::Completion;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::keyed;
use crate::slots::Finished;
use crate::worker::Worker;

/// Most results in one statement. Small enough that PostgreSQL's serializable
/// predicate locks stay on rows (a huge statement escalates to a whole-table lock and
/// makes concurrent claims fail with serialization errors).
const MAX_BATCH: usize = 500;
/// Batches written at the same time.
const MAX_IN_FLIGHT: usize = 1;
/// While draining at shutdown, how many failed writes before giving up (the jobs then
/// come back when their leases expire).
const DRAIN_TRIES: u32 = 10;

pub(crate) async fn completer_loop(
    worker: Arc<Worker>,
    mut results: mpsc::UnboundedReceiver<Finished>,
    drain: CancellationToken,
) {
    let mut writes = JoinSet::new();
    loop {
        if writes.len() >= MAX_IN_FLIGHT {
            writes.join_next().await;
        }
        let first = tokio::select! {
            biased;
            result = results.recv() => result,
            Some(_) = writes.join_next(), if !writes.is_empty() => continue,
            _ = drain.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match results.try_recv() {
                Ok(result) => batch.push(result),
                Err(_) => break,
            }
        }
        writes.spawn(write(worker.clone(), batch, None));
    }
    // Shutdown: every handler has ended, so what is in the channel is all there is.
    let mut rest = Vec::new();
    while let Ok(result) = results.try_recv() {
        rest.push(result);
    }
    while !rest.is_empty() {
        let batch: Vec<Finished> = rest.drain(..rest.len().min(MAX_BATCH)).collect();
        writes.spawn(write(worker.clone(), batch, Some(DRAIN_TRIES)));
    }
    while writes.join_next().await.is_some() {}
}

/// Writes one batch, retrying until it lands (or `max_tries` runs out), then frees the
/// slots, then starts the waiting jobs of the concurrency keys whose slots it freed.
/// Results the database refused were fenced off: their lease expired or they were
/// cancelled (and whoever did that freed their keys' slots).
async fn write(worker: Arc<Worker>, batch: Vec<Finished>, max_tries: Option<u32>) {
    let mut completions = Vec::with_capacity(batch.len());
    let mut slots: Vec<Option<OwnedSemaphorePermit>> = Vec::with_capacity(batch.len());
    let mut keys = Vec::new();
    for finished in batch {
        if let Some(key) = finished.concurrency_key {
            keys.push((finished.completion.id, key));
        }
        completions.push(finished.completion);
        slots.push(finished.permit);
    }
    let applied = record(&worker, &completions, max_tries).await;
    drop(slots);
    let freed = keys
        .into_iter()
        .filter(|(id, _)| applied.contains(id))
        .map(|(_, key)| key);
    keyed::hint_freed(&worker, freed).await;
}

/// Records the batch; returns the ids whose results applied (none when it gave up).
async fn record(
    worker: &Worker,
    completions: &[Completion],
    max_tries: Option<u32>,
) -> HashSet<Uuid> {
    let mut tries = 0;
    loop {
        match worker
            .store
            .record_completions(worker.id, completions)
            .await
        {
            Ok(applied) => {
                worker.outages.completer.ok();
                let applied: HashSet<Uuid> = applied.into_iter().collect();
                for result in completions {
                    worker.running.remove(result.id, result.attempt);
                    if !applied.contains(&result.id) {
                        worker.metrics.completion_refused();
                        warn!(
                            job.id = %result.id,
                            job.attempt = result.attempt,
                            "result refused: this attempt no longer holds the job (lease expired or cancelled)"
                        );
                    }
                }
                return applied;
            }
            Err(err) => {
                tries += 1;
                worker.outages.completer.failed(&err, "recording results");
                if max_tries.is_some_and(|max| tries >= max) {
                    warn!(
                        jobs = completions.len(),
                        "giving up on recording results; the jobs run again after their leases expire"
                    );
                    return HashSet::new();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
