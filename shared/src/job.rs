//! The job model: kinds, priorities, a new job as producers describe it, and the
//! validation that every way in (CLI, library, inbox stream) goes through.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Largest accepted payload, serialized.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Largest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// Attempts when the producer does not say.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 5;
/// Upper bound on `max_attempts`, so that a typo cannot make a job retry for a week.
pub const MAX_MAX_ATTEMPTS: i64 = 100;
/// The queue used when none is named.
pub const DEFAULT_QUEUE: &str = "default";
/// Longest time limit a job may ask for.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Why an input was refused. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidJob {
    #[error("unknown job kind {kind:?} (known kinds: {known})")]
    UnknownKind { kind: String, known: String },
    #[error(
        "invalid queue name {0:?}: use 1 to 64 characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    QueueName(String),
    #[error("invalid priority {0:?} (expected high, normal or low)")]
    Priority(String),
    #[error("payload is {size} bytes, over the {MAX_PAYLOAD_BYTES} byte limit")]
    PayloadTooLarge { size: usize },
    #[error("payload must be a JSON object")]
    PayloadNotObject,
    #[error("invalid payload for {kind}: {reason}")]
    Payload { kind: JobKind, reason: String },
    #[error("max_attempts must be between 1 and {MAX_MAX_ATTEMPTS}, got {0}")]
    MaxAttempts(i64),
    #[error("idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters")]
    IdempotencyKey,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("timeout must be more than 0 and at most 24h, got {0}")]
    Timeout(String),
    #[error(
        "invalid concurrency key {0:?}: use 1 to {max} characters, none of them a control character",
        max = crate::concurrency::MAX_KEY_LEN
    )]
    ConcurrencyKey(String),
}

/// What a job does: a kind's name. Kinds are registered (see [`crate::kind`]): a
/// producer refuses a kind its registry does not hold, so a worker never meets one it
/// cannot run (a newer producer talking to an older worker is the exception, and that
/// job dies with a clear error). A kind's constant is its [`crate::kind::JobType::KIND`];
/// the two that every process knows (drills, tests, benchmarks) have constants here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct JobKind(&'static str);

#[allow(non_upper_case_globals)]
impl JobKind {
    /// Does nothing; for tests and benchmarks.
    pub const Noop: JobKind = JobKind("noop");
    /// Sleeps `ms` milliseconds, optionally failing its first attempts; for tests.
    pub const Sleep: JobKind = JobKind("sleep");

    /// A kind's name: 1 to 64 characters from a-z, 0-9 and '_', starting with a letter
    /// (checked when the kind is registered).
    pub const fn named(name: &'static str) -> JobKind {
        JobKind(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The kind named in a row read from the database. A row holds a name, and a
    /// kind holds a `&'static str`, so names are interned: each distinct name is
    /// leaked once, the first time it is read, into a process-wide set, and every
    /// later read of it shares that copy. The set stays small: every way in (CLI,
    /// library, inbox) refuses a kind its registry does not hold, and registered names
    /// are checked ([`JobKind::is_valid_name`]: at most 64 characters), so it holds at
    /// most the kinds ever registered by the producers of this database, plus any name
    /// written into `jobs.kind` by hand. The name itself is not checked here: what the
    /// row says is what operators see, and what a worker refuses by name.
    pub fn from_stored(name: &str) -> JobKind {
        let known = STORED_KINDS.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(&name) = known.get(name) {
            return JobKind(name);
        }
        drop(known);
        let mut known = STORED_KINDS.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&name) = known.get(name) {
            return JobKind(name);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        known.insert(leaked);
        JobKind(leaked)
    }

    /// Whether the name is usable: it goes into rows, logs, metrics labels and CLI
    /// arguments.
    pub fn is_valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= 64
    }
}

/// The names [`JobKind::from_stored`] has interned. A poisoned lock is used as it is:
/// the only change made under it is one insert, so the set is never half-changed.
static STORED_KINDS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);

/// Comparable with a name (`row.kind == "teardown"`), as [`crate::state::JobState`] is
/// with its text.
impl PartialEq<&str> for JobKind {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Priority within a queue; higher runs first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Highest first: the order workers look at a queue's lists in.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// Stored as a small number so that `ORDER BY priority` puts high first.
    pub fn as_db(self) -> i64 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    /// The priority stored as `value` ([`Priority::as_db`]); `None` for a number that
    /// is none of them (the table's CHECK allows only those).
    pub fn from_db(value: i64) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_db() == value)
    }
}

/// Serialized as its name (`--json` shows `"priority": "high"`).
impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = InvalidJob;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == s)
            .ok_or_else(|| InvalidJob::Priority(s.to_owned()))
    }
}

/// Whether a JSON value holds a NUL character in a string or a key: PostgreSQL's JSONB
/// and text cannot store one (the insert fails), so every way in refuses it first.
pub fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// Checks a queue name: it becomes part of Redis keys and CLI output.
pub fn validate_queue_name(name: &str) -> Result<(), InvalidJob> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(InvalidJob::QueueName(name.to_owned()))
    }
}

/// A job as a producer asks for it. Build one with [`NewJob::new`] and the `with_*`
/// methods; [`crate::kind::Kinds::validate`] (the envelope, then the kind's payload
/// check) runs before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The job's id, chosen by the producer so that an insert replayed after a lost
    /// connection finds the job the first try made; `None` means a fresh random id.
    pub id: Option<Uuid>,
    pub kind: JobKind,
    pub payload: serde_json::Value,
    pub queue: String,
    pub priority: Priority,
    /// Not before this time; `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i64,
    /// The same key always names the same job: enqueueing it again returns the first.
    pub idempotency_key: Option<String>,
    /// The group of jobs this one belongs to, if any: jobs that work on one thing (a
    /// domain's entity, such as a deployment) share its id, so they can be listed
    /// together. The queue gives it no other meaning.
    pub group_id: Option<Uuid>,
    /// Time limit of one attempt; `None` means the kind's default.
    pub timeout: Option<Duration>,
    /// The job's concurrency key, if any: at most the key's limit of jobs with the same
    /// key run at once, across every worker (see [`crate::concurrency`]). A job waiting
    /// for a slot of its key stays `queued`, in order, and uses no attempt.
    pub concurrency_key: Option<String>,
    /// Who asked for the job through the HTTP API (a token's owner); readers scoped to
    /// an owner see only that owner's jobs. `None` for jobs of the library, the CLI and
    /// the inbox.
    pub owner: Option<String>,
    /// The W3C `traceparent` of the span that enqueued the job, stored with it so that
    /// the job's claim and run join that trace (see [`crate::telemetry::job_trace`]).
    /// `None` takes the enqueuing call's current span; stays NULL when tracing is off.
    pub traceparent: Option<String>,
}

impl NewJob {
    pub fn new(kind: JobKind, payload: serde_json::Value) -> NewJob {
        NewJob {
            id: None,
            kind,
            payload,
            queue: DEFAULT_QUEUE.to_owned(),
            priority: Priority::Normal,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_key: None,
            group_id: None,
            timeout: None,
            concurrency_key: None,
            owner: None,
            traceparent: None,
        }
    }

    /// Records who asked for the job (see [`NewJob::owner`]).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Limits each attempt to `timeout` instead of the kind's default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Names the job's id; enqueueing the same id again returns that job.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_run_at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = Some(run_at);
        self
    }

    pub fn with_max_attempts(mut self, max_attempts: i64) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Gives the job a concurrency key (see [`NewJob::concurrency_key`]); the key's
    /// limit is set apart, by key (`Inspector::set_concurrency_limit` of `lc-producer`).
    pub fn with_concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Puts the job in a group (see [`NewJob::group_id`]).
    pub fn with_group(mut self, group_id: Uuid) -> Self {
        self.group_id = Some(group_id);
        self
    }

    /// Checks the envelope: queue, attempts, keys, time limit, payload size and shape.
    /// The payload itself is the kind's to check: [`crate::kind::Kinds::validate`] does
    /// both, and is what every way in calls.
    pub fn validate_envelope(&self) -> Result<(), InvalidJob> {
        validate_queue_name(&self.queue)?;
        if !(1..=MAX_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(InvalidJob::MaxAttempts(self.max_attempts));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(InvalidJob::IdempotencyKey);
        }
        if let Some(timeout) = self.timeout
            && (timeout.is_zero() || timeout > MAX_JOB_TIMEOUT)
        {
            return Err(InvalidJob::Timeout(format!("{timeout:?}")));
        }
        if let Some(key) = &self.concurrency_key
            && !crate::concurrency::is_valid_key(key)
        {
            return Err(InvalidJob::ConcurrencyKey(key.clone()));
        }
        let size = serde_json::to_vec(&self.payload)
            .map_err(|err| InvalidJob::Json(err.to_string()))?
            .len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(InvalidJob::PayloadTooLarge { size });
        }
        if !self.payload.is_object() {
            return Err(InvalidJob::PayloadNotObject);
        }
        if has_nul(&self.payload) {
            return Err(InvalidJob::Json(
                "payload holds a NUL character (\\u0000), which the database cannot store".into(),
            ));
        }
        Ok(())
    }

    /// Whether a hint can go out right away (otherwise the sweeper sends it when due).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.run_at.is_none_or(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_kinds_are_interned_once() {
        let first = JobKind::from_stored("resize_image");
        let again = JobKind::from_stored(&String::from("resize_image"));
        assert_eq!(first, again);
        assert_eq!(first, JobKind::named("resize_image"));
        assert!(std::ptr::eq(first.as_str(), again.as_str()));
        assert_eq!(JobKind::from_stored("noop"), JobKind::Noop);
        assert!(JobKind::from_stored("teardown") == "teardown");
        assert_eq!(
            serde_json::to_string(&JobKind::from_stored("deploy")).expect("serializes"),
            r#""deploy""#
        );
    }

    #[test]
    fn nul_is_found_in_strings_and_keys_at_any_depth() {
        assert!(!has_nul(
            &serde_json::json!({"a": ["b", {"c": 1}], "d": null})
        ));
        assert!(has_nul(&serde_json::json!({"a": ["b", {"c": "x\u{0}"}]})));
        assert!(has_nul(&serde_json::json!({"k\u{0}": 1})));
        let job = NewJob::new(JobKind::Noop, serde_json::json!({"text": "a\u{0}b"}));
        assert!(matches!(job.validate_envelope(), Err(InvalidJob::Json(_))));
    }

    #[test]
    fn priorities_serialize_as_their_names() {
        assert_eq!(
            serde_json::to_string(&Priority::ALL).expect("serializes"),
            r#"["high","normal","low"]"#
        );
    }

    #[test]
    fn priorities_order_high_first() {
        let mut all = vec![Priority::Low, Priority::High, Priority::Normal];
        all.sort_by_key(|priority| priority.as_db());
        assert_eq!(all, Priority::ALL);
        for priority in Priority::ALL {
            assert_eq!(Priority::from_db(priority.as_db()), Some(priority));
        }
        assert_eq!(Priority::from_db(3), None);
        assert_eq!(Priority::from_db(-1), None);
    }
}
