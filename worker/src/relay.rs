//! The event relay, run by every worker unless `--no-events` (several at once is safe):
//! publishes the outbox of each event source (the jobs' own, then those the registry
//! added) to the event stream `<prefix>:{events}`, one batch per transaction:
//!
//! 1. take the source's turn (on PostgreSQL an advisory lock held to the end of the
//!    transaction; a relay whose turn another holds skips the round), then claim up to
//!    `--events-batch` unpublished events, oldest first: read them, then mark them
//!    published with one conditional statement that waits for another relay's
//!    uncommitted marks (so each subject's events keep their order even where there
//!    are no turns, on CockroachDB);
//! 2. add them to the stream in one pipelined round trip (`XADD MAXLEN ~`);
//! 3. let the source write what follows from them (the deployment domain's webhook
//!    deliveries), and commit: the marks count from here.
//!
//! A crash, a lost connection or a refused commit anywhere before step 3's commit
//! leaves the rows unmarked: the next claim (here or in another worker) sends them
//! again, with the same event ids. Redis being down leaves them waiting in the database.
//! An idle relay, or one whose turn another holds, looks again every
//! `--events-interval`; a full batch is followed by the next at once. On shutdown the
//! relay publishes what the last completions wrote, for a few seconds at most. See
//! `lc_shared::events`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lc_shared::events::{Event, EventSource, JobEvents};
use lc_shared::queue::QueueError;
use lc_shared::store::{Enqueued, Isolation, Replay, StoreError, error_chain, relay_turn, retry};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::handlers::{EventsObserver, Registry};
use crate::worker::Worker;

/// How often each source's housekeeping ([`EventSource::tick`]) runs.
const TICK_EVERY: Duration = Duration::from_secs(1);

/// How long a relay transaction may sit idle (waiting for Redis) before the database
/// ends it and releases its rows: a relay on a host that vanished without closing its
/// connections would otherwise hold the oldest events, and every other relay behind
/// them, until TCP keepalive noticed (hours).
const IDLE_IN_TRANSACTION: &str = "SET LOCAL idle_in_transaction_session_timeout = '30s'";

/// How long a stopping worker keeps publishing what its last transitions wrote.
const FLUSH_ON_STOP: Duration = Duration::from_secs(5);

/// What one batch did.
#[derive(Debug, Default)]
struct Relayed {
    sent: usize,
    enqueued: Vec<Enqueued>,
}

/// Why a batch was not published: the database, or Redis (then the transaction was
/// rolled back and the events wait for the next try).
enum RelayError {
    Store(StoreError),
    Redis(QueueError),
}

pub(crate) async fn relay_loop(worker: Arc<Worker>, registry: Registry, stop: CancellationToken) {
    let mut sources: Vec<Arc<dyn EventSource>> =
        vec![Arc::new(JobEvents::new(worker.store.clone()))];
    sources.extend(registry.event_sources().iter().cloned());
    let mut relay = Relay {
        worker,
        full: vec![false; sources.len()],
        sources,
        observer: registry.events_observer(),
        redis_failing: false,
    };
    let interval = relay.worker.config.events.events_interval;
    let mut last_tick: Option<Instant> = None;
    loop {
        let busy = relay.round().await;
        if last_tick.is_none_or(|at| at.elapsed() >= TICK_EVERY) {
            relay.tick().await;
            last_tick = Some(Instant::now());
        }
        if stop.is_cancelled() {
            break;
        }
        if !busy {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
    // The jobs finished or handed back during shutdown wrote events after the last
    // round: publish them now rather than leave them for another worker.
    let deadline = Instant::now() + FLUSH_ON_STOP;
    while relay.round().await && Instant::now() < deadline {}
}

/// One worker's relay: its sources and what it reports.
struct Relay {
    worker: Arc<Worker>,
    sources: Vec<Arc<dyn EventSource>>,
    /// Per source, whether its last batch was full: then the next claims at once,
    /// without the cheap look first.
    full: Vec<bool>,
    observer: Option<EventsObserver>,
    /// Whether the last send to Redis failed, so an outage is logged once.
    redis_failing: bool,
}

impl Relay {
    /// One batch of each source; true when a source had a full batch (more may wait).
    async fn round(&mut self) -> bool {
        let batch = self.worker.config.events.events_batch;
        let mut busy = false;
        for (index, source) in self.sources.clone().into_iter().enumerate() {
            let look_first = !self.full[index];
            self.full[index] = false;
            match relay_batch(&self.worker, source.as_ref(), self.observer, look_first).await {
                Ok(relayed) => {
                    self.worker.outages.relay.ok();
                    if relayed.sent > 0 && std::mem::take(&mut self.redis_failing) {
                        info!("events go out again");
                    }
                    self.worker
                        .metrics
                        .events_published(source.name(), relayed.sent);
                    self.worker.dispatch.committed(&relayed.enqueued).await;
                    self.full[index] = relayed.sent >= batch;
                    busy |= self.full[index];
                }
                Err(RelayError::Store(err)) => {
                    self.worker.outages.relay.failed(&err, "publishing events")
                }
                Err(RelayError::Redis(err)) => {
                    if !std::mem::replace(&mut self.redis_failing, true) {
                        warn!(source = source.name(), error = %error_chain(&err),
                              "could not add events to the stream; they wait in the database (logged once until they go out)");
                    }
                }
            }
        }
        busy
    }

    /// Each source's housekeeping.
    async fn tick(&self) {
        for source in &self.sources {
            match source.tick(&self.worker.store).await {
                Ok(enqueued) => self.worker.dispatch.committed(&enqueued).await,
                Err(err) => self
                    .worker
                    .outages
                    .relay
                    .failed(&err, "looking after event deliveries"),
            }
        }
    }
}

/// Claims, sends and marks one batch of `source` in one transaction (after a cheap look
/// that something waits, with `look_first`), through the retry helper: a replay (after
/// a conflict, or a commit whose outcome is unknown) claims what is still unmarked and
/// sends it again, with the same ids.
///
/// Read committed: the claim's marks are a conditional update, which holds the rows it
/// marked until this transaction ends and waits for rows another relay holds, so no
/// other relay sends these rows unless this transaction rolls back.
async fn relay_batch(
    worker: &Worker,
    source: &dyn EventSource,
    observer: Option<EventsObserver>,
    look_first: bool,
) -> Result<Relayed, RelayError> {
    let limit = i64::try_from(worker.config.events.events_batch).unwrap_or(i64::MAX);
    let maxlen = worker.config.events.events_maxlen;
    if look_first
        && !source
            .pending(&worker.store)
            .await
            .map_err(RelayError::Store)?
    {
        return Ok(Relayed::default());
    }
    let outcome = retry(Replay::Safe, || async {
        let mut client = worker.store.client().await?;
        let tx = worker
            .store
            .begin(&mut client, Isolation::ReadCommitted)
            .await?;
        // Sent together with the turn (tokio-postgres pipelines futures polled together).
        let (limited, turn) = tokio::join!(
            tx.batch_execute(IDLE_IN_TRANSACTION),
            relay_turn(&worker.store, &tx, source.name())
        );
        limited?;
        if !turn? {
            // Another relay is publishing this source: reading the same oldest rows
            // would only wait on its marks.
            tx.commit().await?;
            return Ok(Ok(Relayed::default()));
        }
        let events = source.claim(&tx, limit).await?;
        if events.is_empty() {
            tx.commit().await?;
            return Ok(Ok(Relayed::default()));
        }
        let json: Vec<String> = events.iter().map(Event::to_json).collect();
        let entry_ids = match worker.queue.add_events(&json, maxlen).await {
            Ok(ids) => ids,
            // Dropping the transaction rolls it back: the rows are free again.
            Err(err) => return Ok(Err(err)),
        };
        if let Some(observer) = observer {
            observer(&events);
        }
        let enqueued = source.published(&tx, &events, &entry_ids).await?;
        tx.commit().await?;
        Ok(Ok(Relayed {
            sent: events.len(),
            enqueued,
        }))
    })
    .await
    .map_err(RelayError::Store)?;
    outcome.map_err(RelayError::Redis)
}
