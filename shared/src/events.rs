//! Events for upstream services: every job state change, and every change a domain
//! adds (the deployment domain adds its deployments', machines' and containers'), as
//! one entry of a capped Redis stream, `<prefix>:{events}`, which consumers in any
//! language follow with a consumer group of their own (the wire format is [`Event`]; the
//! README's "Events" section shows it).
//!
//! **The history is the outbox.** Each change already appends its history row
//! (`job_events`, or a domain's own table) in the statement or transaction that makes
//! it, so an event exists if and only if its change committed. A row whose
//! `published_at` is NULL is an event not on the stream yet. The event relay (in
//! `lc-worker`, one per worker process; several at once is safe) claims a batch of such
//! rows (reads them and marks them, in its transaction), adds them to the stream and
//! commits: a crash anywhere before the commit leaves them unmarked and the next claim
//! sends them again, with the same event ids. Delivery is at least once; consumers
//! deduplicate by `id`.
//!
//! **Sources.** Each kind of history is an [`EventSource`]: the queue core's jobs
//! ([`JobEvents`], always relayed) and whatever a domain registers on its worker's
//! registry (`lc_worker::Registry::with_event_source`), the way it registers kinds. The
//! core knows nothing of a domain's events beyond this trait: a domain's events carry
//! its own `type` and fields ([`Event::detail`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dialect::Dialect;
use crate::store::{self, Enqueued, ScanBound, Store};

/// The wire format's version: the `v` of every event. A change that breaks readers
/// gets a new number; new fields do not.
pub const WIRE_VERSION: u32 = 1;

/// The type of a job's state change.
pub const JOB_STATE_CHANGED: &str = "job.state_changed";

/// About how many entries the event stream keeps unless a worker is told otherwise
/// (`lc-worker --events-maxlen`). An event takes a few hundred bytes of Redis memory.
pub const DEFAULT_STREAM_MAXLEN: usize = 100_000;

/// Longest `message` an event carries (bytes); longer ones are cut with a note.
pub const MAX_MESSAGE_BYTES: usize = 2000;

/// One event as consumers read it: the JSON in the `event` field of a stream entry, and
/// the body of a webhook request.
///
/// ```json
/// {"v": 1, "id": "0193c8a4-…", "type": "job.state_changed", "at": "2026-12-06T21:30:00.123456Z",
///  "group_id": null, "from": "queued", "to": "running", "message": "claimed",
///  "job": {"id": "0193c8a3-…", "kind": "noop", "queue": "default", "attempt": 1}}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// [`WIRE_VERSION`].
    pub v: u32,
    /// The event's id (its history row's): the same on every delivery of it.
    pub id: Uuid,
    /// What changed: [`JOB_STATE_CHANGED`], or a domain's type
    /// (`deployment.state_changed`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change was made (the database's clock).
    pub at: DateTime<Utc>,
    /// The group of jobs the change belongs to (a deployment's jobs and the
    /// deployment's own events carry the deployment's id), if any.
    pub group_id: Option<Uuid>,
    /// The state before (`None` for a subject's first state).
    pub from: Option<String>,
    /// The state after.
    pub to: String,
    /// What the history says about the change (a transition's label, an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The type's own fields: `job` for a job's change; a domain's (`deployment`,
    /// `subject`, ...) for its own.
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// The job an event of type [`JOB_STATE_CHANGED`] is about (its `job` field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub id: Uuid,
    /// `None` only when the job row was gone by the time the event was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The attempt the change belongs to (the claim that started it, its outcome).
    pub attempt: i64,
}

impl Event {
    /// An event of this version with no detail yet.
    pub fn new(
        id: Uuid,
        kind: impl Into<String>,
        at: DateTime<Utc>,
        from: Option<String>,
        to: impl Into<String>,
    ) -> Event {
        Event {
            v: WIRE_VERSION,
            id,
            kind: kind.into(),
            at,
            group_id: None,
            from,
            to: to.into(),
            message: None,
            detail: serde_json::Map::new(),
        }
    }

    /// The event with `message`, cut at [`MAX_MESSAGE_BYTES`].
    pub fn with_message(mut self, message: Option<&str>) -> Event {
        self.message = message.map(cut_message);
        self
    }

    pub fn with_group(mut self, group_id: Option<Uuid>) -> Event {
        self.group_id = group_id;
        self
    }

    /// The event with one more field of its type's own.
    pub fn with_detail(mut self, field: &str, value: serde_json::Value) -> Event {
        self.detail.insert(field.to_owned(), value);
        self
    }

    /// The job of a job event.
    pub fn job(&self) -> Option<JobRef> {
        serde_json::from_value(self.detail.get("job")?.clone()).ok()
    }

    /// The wire JSON.
    pub fn to_json(&self) -> String {
        // Plain data (strings, numbers, maps with string keys): serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A job's state change, from its history row.
    pub fn from_job_row(row: &store::JobEventRow) -> Event {
        let job = JobRef {
            id: row.job_id,
            kind: row.kind.clone(),
            queue: row.queue.clone(),
            attempt: row.attempt,
        };
        Event::new(
            row.id,
            JOB_STATE_CHANGED,
            row.at,
            row.from_state.map(|state| state.as_str().to_owned()),
            row.to_state.as_str(),
        )
        .with_group(row.group_id)
        .with_message(row.message.as_deref())
        .with_detail(
            "job",
            serde_json::to_value(job).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn cut_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [{} more bytes]", &message[..cut], message.len() - cut)
}

/// What a source's step returns: a boxed future, so that sources are trait objects.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = store::Result<T>> + Send + 'a>>;

/// One kind of history that the event relay publishes. The relay, for each source in
/// turn: opens a transaction (read committed), [`EventSource::claim`]s a batch, adds it
/// to the stream, calls [`EventSource::published`] and commits, all through the store's
/// retry helper. A source's claim must
/// - take the oldest unpublished rows and mark them published in the relay's
///   transaction with a statement that waits for another relay's uncommitted marks
///   (a conditional update, or a locking read: not `SKIP LOCKED`), so that relays of
///   several workers take turns and each subject's events keep their order (see the
///   notes of `lc_shared::store::claim_job_events`);
/// - return only the rows it marked, oldest first: a crash before the commit leaves
///   them all to be sent again.
///
/// `published` may write more in the transaction (the deployment domain enqueues its
/// webhook deliveries there) and returns the jobs it enqueued, whose hints the relay
/// sends after the commit.
pub trait EventSource: Send + Sync + 'static {
    /// A short name for logs and metrics (`jobs`, `deployments`).
    fn name(&self) -> &'static str;

    /// Whether any event waits, by one cheap read outside a transaction: an idle relay
    /// asks this before it opens a transaction to claim. `true` by default (always
    /// claim).
    fn pending<'a>(&'a self, _store: &'a Store) -> SourceFuture<'a, bool> {
        Box::pin(async { Ok(true) })
    }

    /// Claims up to `limit` unpublished events (marks them in `tx`) and returns them,
    /// oldest first.
    fn claim<'a>(&'a self, tx: &'a Transaction<'a>, limit: i64) -> SourceFuture<'a, Vec<Event>>;

    /// What follows in `tx` from `events` (a claim's, now on the stream as the entries
    /// `entry_ids`, in the same order); returns the jobs it enqueued. Nothing by default.
    fn published<'a>(
        &'a self,
        _tx: &'a Transaction<'a>,
        _events: &'a [Event],
        _entry_ids: &'a [String],
    ) -> SourceFuture<'a, Vec<Enqueued>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Housekeeping the relay runs about once a second, outside any claim (a domain's
    /// stalled deliveries); returns the jobs it enqueued. Nothing by default.
    fn tick<'a>(&'a self, _store: &'a Store) -> SourceFuture<'a, Vec<Enqueued>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Claims between two unbounded scans of the outbox on CockroachDB (see
/// `lc_shared::store::claim_job_events`).
const FULL_SCAN_EVERY: u32 = 50;

/// The queue core's events: every job transition (type [`JOB_STATE_CHANGED`]).
pub struct JobEvents {
    store: Store,
    /// The claim's lower bound on CockroachDB; unused on PostgreSQL.
    bound: Mutex<ScanBound>,
}

impl JobEvents {
    pub fn new(store: Store) -> JobEvents {
        JobEvents {
            store,
            bound: Mutex::new(ScanBound::new(FULL_SCAN_EVERY)),
        }
    }

    fn bound(&self) -> ScanBound {
        *self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_bound(&self, bound: ScanBound) {
        *self
            .bound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = bound;
    }
}

impl EventSource for JobEvents {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn pending<'a>(&'a self, store: &'a Store) -> SourceFuture<'a, bool> {
        Box::pin(store.job_events_pending())
    }

    fn claim<'a>(&'a self, tx: &'a Transaction<'a>, limit: i64) -> SourceFuture<'a, Vec<Event>> {
        Box::pin(async move {
            let rows = match self.store.dialect().await? {
                Dialect::PostgreSql => store::claim_job_events(tx, limit, None).await?,
                Dialect::CockroachDb => {
                    let mut bound = self.bound();
                    let rows = store::claim_job_events(tx, limit, Some(&mut bound)).await?;
                    self.set_bound(bound);
                    rows
                }
            };
            Ok(rows.iter().map(Event::from_job_row).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobState;

    fn row() -> store::JobEventRow {
        store::JobEventRow {
            job_id: Uuid::from_u128(1),
            id: Uuid::from_u128(2),
            at: DateTime::parse_from_rfc3339("2026-12-06T21:30:00.123456Z")
                .expect("a time")
                .with_timezone(&Utc),
            from_state: Some(JobState::Queued),
            to_state: JobState::Running,
            attempt: 1,
            message: Some("claimed".into()),
            kind: Some("noop".into()),
            queue: Some("default".into()),
            group_id: None,
        }
    }

    #[test]
    fn a_job_event_on_the_wire() {
        let event = Event::from_job_row(&row());
        let json: serde_json::Value = serde_json::from_str(&event.to_json()).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "v": 1,
                "id": "00000000-0000-0000-0000-000000000002",
                "type": "job.state_changed",
                "at": "2026-12-06T21:30:00.123456Z",
                "group_id": null,
                "from": "queued",
                "to": "running",
                "message": "claimed",
                "job": {"id": "00000000-0000-0000-0000-000000000001", "kind": "noop",
                        "queue": "default", "attempt": 1}
            })
        );
        let back: Event = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, event);
        assert_eq!(back.job().map(|job| job.id), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_first_state_has_no_from_and_long_messages_are_cut() {
        let mut first = row();
        first.from_state = None;
        first.to_state = JobState::Queued;
        first.message = Some("é".repeat(MAX_MESSAGE_BYTES));
        let event = Event::from_job_row(&first);
        assert_eq!(event.from, None);
        let message = event.message.expect("a message");
        assert!(message.len() < MAX_MESSAGE_BYTES + 40, "{}", message.len());
        assert!(message.ends_with("more bytes]"), "{message}");
    }
}
