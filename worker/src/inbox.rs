//! Ingests the Redis inbox stream, where services in any language enqueue jobs by
//! writing a JSON message. Each message becomes a job (idempotently: the stream entry
//! id is the default idempotency key) and a hint, and is acknowledged only after the
//! job committed. An invalid message is moved to the dead-letter stream with its
//! reason, never dropped. Messages this worker read but could not store (the database
//! was down) are read again from its own pending list until they are stored, so they
//! are ingested as soon as the database answers: while they wait they exist only in
//! Redis, which may run without persistence. Messages a crashed worker read but never
//! acknowledged are taken over after a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lc_shared::NewJob;
use lc_shared::queue::{HintPopper, InboxMessage};
use lc_shared::store::{HintTarget, error_chain};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use lc_shared::kind::Kinds;

use crate::worker::Worker;

/// Messages read per call.
const READ_COUNT: usize = 200;
/// How long an unacknowledged message waits before another worker takes it over.
const RECLAIM_IDLE: Duration = Duration::from_secs(30);
/// Pause between tries to store this worker's pending messages while the database is
/// down; each try itself spends a couple of seconds in the retry helper, so the wait
/// after the database is back stays under a few seconds.
const PENDING_RETRY: Duration = Duration::from_millis(250);

pub(crate) async fn inbox_loop(worker: Arc<Worker>, kinds: Kinds, stop: CancellationToken) {
    let consumer = worker.id.to_string();
    let mut popper: Option<HintPopper> = None;
    let mut last_reclaim = Instant::now();
    let mut group_ready = false;
    // Set when messages this worker read are still pending (not stored): they are read
    // again with XREADGROUP id 0, which `>` never returns.
    let mut own_pending = false;
    while !stop.is_cancelled() {
        if !group_ready {
            match worker.queue.ensure_inbox_group().await {
                Ok(()) => group_ready = true,
                Err(err) => {
                    debug!(error = %error_chain(&err), "inbox unavailable; retrying");
                    pause(&stop).await;
                    continue;
                }
            }
        }
        if last_reclaim.elapsed() >= RECLAIM_IDLE / 2 {
            last_reclaim = Instant::now();
            match worker
                .queue
                .reclaim_inbox(&consumer, RECLAIM_IDLE, READ_COUNT)
                .await
            {
                Ok(messages) if !messages.is_empty() => {
                    warn!(
                        messages = messages.len(),
                        "taking over inbox messages a stopped worker left unacknowledged"
                    );
                    // Taken over, they are this worker's pending entries now.
                    if !ingest(&worker, &kinds, messages).await {
                        own_pending = true;
                    }
                }
                Ok(_) => {}
                Err(err) => warn!(error = %error_chain(&err), "could not reclaim inbox messages"),
            }
        }
        let conn = match popper.as_mut() {
            Some(conn) => conn,
            None => match worker.queue.popper().await {
                Ok(conn) => popper.insert(conn),
                Err(err) => {
                    debug!(error = %error_chain(&err), "inbox unavailable; retrying");
                    pause(&stop).await;
                    continue;
                }
            },
        };
        let read = if own_pending {
            worker
                .queue
                .read_own_pending(conn, &consumer, READ_COUNT)
                .await
        } else {
            worker
                .queue
                .read_inbox(conn, &consumer, READ_COUNT, Duration::from_secs(1))
                .await
        };
        match read {
            Ok(messages) if own_pending && messages.is_empty() => own_pending = false,
            Ok(messages) => {
                if !ingest(&worker, &kinds, messages).await {
                    own_pending = true;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(PENDING_RETRY) => {}
                    }
                }
            }
            Err(err) => {
                warn!(error = %error_chain(&err), "inbox read failed; reconnecting");
                popper = None;
                group_ready = false;
                pause(&stop).await;
            }
        }
    }
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

/// Turns messages into jobs. Nothing is acknowledged unless its job committed or it
/// was dead-lettered; on a database error the batch stays pending, to be read again,
/// and this returns false.
pub async fn ingest(worker: &Worker, kinds: &Kinds, messages: Vec<InboxMessage>) -> bool {
    if messages.is_empty() {
        return true;
    }
    let mut stored = true;
    let mut jobs = Vec::new();
    let mut handled = Vec::new();
    let mut accepted = Vec::new();
    for message in &messages {
        let parsed = match &message.body {
            Some(body) => {
                NewJob::from_wire(body, &message.entry_id, kinds).map_err(|err| err.to_string())
            }
            None => Err("message has no \"job\" field".to_owned()),
        };
        match parsed {
            Ok(job) => {
                jobs.push(job);
                accepted.push(message.entry_id.clone());
            }
            Err(reason) => match worker.queue.dead_letter(message, &reason).await {
                Ok(()) => {
                    warn!(entry = %message.entry_id, reason = %reason, "inbox message refused; kept in the dead-letter stream");
                    handled.push(message.entry_id.clone());
                }
                Err(err) => {
                    warn!(error = %error_chain(&err), "could not dead-letter an inbox message; it stays pending")
                }
            },
        }
    }
    if !jobs.is_empty() {
        match worker.store.enqueue(&jobs, true).await {
            Ok(enqueued) => {
                let hints: Vec<HintTarget> =
                    enqueued.into_iter().filter_map(|job| job.hint).collect();
                worker.dispatch.send(&hints).await;
                debug!(jobs = accepted.len(), "ingested inbox messages");
                worker.outages.inbox.ok();
                handled.extend(accepted);
            }
            Err(err) => {
                stored = false;
                worker.outages.inbox.failed(
                    &err,
                    "ingesting inbox messages (they stay pending and are read again)",
                );
            }
        }
    }
    if let Err(err) = worker.queue.ack_inbox(&handled).await {
        warn!(error = %error_chain(&err), "could not acknowledge inbox messages; ingesting them again makes no second job");
    }
    stored
}
