//! Records finished runs. Results arrive on a channel and are written in batches: one
//! statement for everything that arrived while the previous batch was being written,
//! so throughput grows with load and an idle worker adds no delay.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lc_shared::store::{Completion, error_chain};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use crate::worker::Worker;

/// Most results in one statement.
const MAX_BATCH: usize = 1000;
/// While draining at shutdown, how many failed writes before giving up (the jobs then
/// come back when their leases expire).
const DRAIN_TRIES: u32 = 10;

pub(crate) async fn completer_loop(
    worker: Arc<Worker>,
    mut results: mpsc::UnboundedReceiver<Completion>,
    drain: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            result = results.recv() => result,
            _ = drain.cancelled() => None,
        };
        let Some(first) = first else {
            let mut rest = Vec::new();
            while let Ok(result) = results.try_recv() {
                rest.push(result);
            }
            for batch in rest.chunks(MAX_BATCH) {
                write(&worker, batch, Some(DRAIN_TRIES)).await;
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match results.try_recv() {
                Ok(result) => batch.push(result),
                Err(_) => break,
            }
        }
        write(&worker, &batch, None).await;
    }
}

/// Writes one batch, retrying until it lands (or `max_tries` runs out). Results the
/// database refused were fenced off: their lease expired or they were cancelled.
async fn write(worker: &Worker, batch: &[Completion], max_tries: Option<u32>) {
    let mut tries = 0;
    loop {
        match worker.store.record_completions(worker.id, batch).await {
            Ok(applied) => {
                let applied: HashSet<Uuid> = applied.into_iter().collect();
                for result in batch {
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
                return;
            }
            Err(err) => {
                tries += 1;
                error!(error = %error_chain(&err), jobs = batch.len(), tries, "could not record results; retrying");
                if max_tries.is_some_and(|max| tries >= max) {
                    warn!(jobs = batch.len(), "giving up on recording results; the jobs run again after their leases expire");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
