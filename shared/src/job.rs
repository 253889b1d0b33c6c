//! The job model: kinds, priorities, a new job as producers describe it, and the
//! validation that every way in (CLI, library, inbox stream) goes through.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
    #[error("unknown job kind {0:?} (known kinds: {known})", known = JobKind::names().join(", "))]
    UnknownKind(String),
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
}

/// What a job does. Unknown kinds are refused at the door, so a worker never meets one
/// it cannot run (a newer producer talking to an older worker is the exception, and
/// that job dies with a clear error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Does nothing; for tests and benchmarks.
    Noop,
    /// Sleeps `ms` milliseconds, optionally failing its first attempts; for tests.
    Sleep,
    /// Creates every machine of a deployment (fans out `provision_machine` jobs).
    Provision,
    /// Creates one machine of a deployment.
    ProvisionMachine,
    /// Runs the payload container on every machine of a deployment.
    Deploy,
    /// Removes a deployment's containers and machines.
    Teardown,
}

impl JobKind {
    pub const ALL: [JobKind; 6] = [
        JobKind::Noop,
        JobKind::Sleep,
        JobKind::Provision,
        JobKind::ProvisionMachine,
        JobKind::Deploy,
        JobKind::Teardown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::Sleep => "sleep",
            JobKind::Provision => "provision",
            JobKind::ProvisionMachine => "provision_machine",
            JobKind::Deploy => "deploy",
            JobKind::Teardown => "teardown",
        }
    }

    /// How long a handler of this kind may run before it is stopped and the attempt
    /// fails as retryable, unless the job or the worker (`--kind-timeout`) says
    /// otherwise. Generous: a limit is there to end hung attempts, not slow ones.
    pub fn default_timeout(self) -> Duration {
        const MINUTE: u64 = 60;
        Duration::from_secs(match self {
            JobKind::Noop => MINUTE,
            // Above the longest sleep a payload may ask for (MAX_SLEEP_MS, one hour).
            JobKind::Sleep => 65 * MINUTE,
            // Each docker-machine call has its own limit (--machine-timeout, 10m); a
            // machine takes a create plus a few short calls, maybe after a removal.
            JobKind::Provision | JobKind::ProvisionMachine => 45 * MINUTE,
            // Pulls and container starts on every machine of a deployment.
            JobKind::Deploy => 30 * MINUTE,
            // Container stops plus one docker-machine rm per machine.
            JobKind::Teardown => 30 * MINUTE,
        })
    }

    pub fn names() -> Vec<&'static str> {
        JobKind::ALL.iter().map(|kind| kind.as_str()).collect()
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = InvalidJob;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| InvalidJob::UnknownKind(s.to_owned()))
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

    pub fn from_db(value: i64) -> Priority {
        match value {
            0 => Priority::High,
            2 => Priority::Low,
            _ => Priority::Normal,
        }
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
/// methods; [`NewJob::validate`] runs before anything is written.
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
    /// The deployment this job works on, if any (for `lc jobs ls --deployment`).
    pub deployment_id: Option<Uuid>,
    /// Time limit of one attempt; `None` means the kind's default.
    pub timeout: Option<Duration>,
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
            deployment_id: None,
            timeout: None,
        }
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

    pub fn with_deployment(mut self, deployment_id: Uuid) -> Self {
        self.deployment_id = Some(deployment_id);
        self
    }

    /// Refuses anything a worker could not run or that would hurt the system.
    pub fn validate(&self) -> Result<(), InvalidJob> {
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
        let size = serde_json::to_vec(&self.payload)
            .map_err(|err| InvalidJob::Json(err.to_string()))?
            .len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(InvalidJob::PayloadTooLarge { size });
        }
        if !self.payload.is_object() {
            return Err(InvalidJob::PayloadNotObject);
        }
        validate_payload(self.kind, &self.payload)
    }

    /// Whether a hint can go out right away (otherwise the sweeper sends it when due).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.run_at.is_none_or(|at| at <= now)
    }
}

/// A job as other languages write it to the Redis inbox stream, in the `job` field of
/// a stream entry. Documented in the README; unknown fields are refused so that a typo
/// is reported instead of silently ignored.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WireJob {
    pub kind: String,
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub max_attempts: Option<i64>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Time limit of each attempt, as a duration ("90s", "5m", "500ms").
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Room for the envelope around a payload in a wire message.
const WIRE_OVERHEAD_BYTES: usize = 8 * 1024;

impl NewJob {
    /// Parses and validates an inbox message. `fallback_key` (the stream entry id)
    /// becomes the idempotency key when the message has none, so ingesting the same
    /// entry twice makes one job.
    pub fn from_wire(body: &str, fallback_key: &str) -> Result<NewJob, InvalidJob> {
        if body.len() > MAX_PAYLOAD_BYTES + WIRE_OVERHEAD_BYTES {
            return Err(InvalidJob::PayloadTooLarge { size: body.len() });
        }
        let wire: WireJob =
            serde_json::from_str(body).map_err(|err| InvalidJob::Json(err.to_string()))?;
        let mut job = NewJob::new(
            wire.kind.parse()?,
            wire.payload.unwrap_or_else(|| serde_json::json!({})),
        );
        if let Some(queue) = wire.queue {
            job.queue = queue;
        }
        if let Some(priority) = wire.priority {
            job.priority = priority.parse()?;
        }
        job.run_at = wire.run_at;
        if let Some(max_attempts) = wire.max_attempts {
            job.max_attempts = max_attempts;
        }
        if let Some(timeout) = wire.timeout {
            job.timeout =
                Some(crate::config::parse_duration(&timeout).map_err(InvalidJob::Timeout)?);
        }
        job.idempotency_key = Some(
            wire.idempotency_key
                .unwrap_or_else(|| format!("inbox:{fallback_key}")),
        );
        job.validate()?;
        Ok(job)
    }
}

/// Payload of a `sleep` job (and of `noop`, which ignores `ms`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    /// How long to sleep.
    #[serde(default)]
    pub ms: u64,
    /// Fail (retryably) while the attempt number is at most this.
    #[serde(default)]
    pub fail_times: i64,
    /// Fail fatally instead.
    #[serde(default)]
    pub fatal: bool,
    /// Write a row to `job_effects` when done, so tests can count effects per attempt.
    #[serde(default)]
    pub record: bool,
}

/// Longest `sleep` accepted: tests and drills, not a way to park workers.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

fn validate_payload(kind: JobKind, payload: &serde_json::Value) -> Result<(), InvalidJob> {
    let invalid = |reason: String| InvalidJob::Payload { kind, reason };
    match kind {
        JobKind::Noop | JobKind::Sleep => {
            let sleep: SleepPayload =
                serde_json::from_value(payload.clone()).map_err(|err| invalid(err.to_string()))?;
            if sleep.ms > MAX_SLEEP_MS {
                return Err(invalid(format!("ms must be at most {MAX_SLEEP_MS}")));
            }
            Ok(())
        }
        JobKind::Provision | JobKind::ProvisionMachine | JobKind::Deploy | JobKind::Teardown => {
            crate::deployment::validate_job_payload(kind, payload).map_err(invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_bad_input() {
        let ok = NewJob::new(JobKind::Noop, json!({}));
        assert_eq!(ok.validate(), Ok(()));
        assert!(matches!(
            ok.clone().with_queue("Bad Queue").validate(),
            Err(InvalidJob::QueueName(_))
        ));
        assert!(matches!(
            ok.clone().with_queue("").validate(),
            Err(InvalidJob::QueueName(_))
        ));
        assert!(matches!(
            ok.clone().with_max_attempts(0).validate(),
            Err(InvalidJob::MaxAttempts(0))
        ));
        let big = NewJob::new(JobKind::Noop, json!({ "x": "a".repeat(MAX_PAYLOAD_BYTES) }));
        assert!(matches!(
            big.validate(),
            Err(InvalidJob::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            NewJob::new(JobKind::Noop, json!([1])).validate(),
            Err(InvalidJob::PayloadNotObject)
        ));
        assert!(matches!(
            NewJob::new(JobKind::Sleep, json!({"ms": "soon"})).validate(),
            Err(InvalidJob::Payload { .. })
        ));
        assert!(matches!(
            "frobnicate".parse::<JobKind>(),
            Err(InvalidJob::UnknownKind(_))
        ));
        assert!(matches!(
            "urgent".parse::<Priority>(),
            Err(InvalidJob::Priority(_))
        ));
    }

    #[test]
    fn parses_wire_messages() {
        let job = NewJob::from_wire(
            r#"{"kind":"sleep","payload":{"ms":5},"queue":"emails","priority":"high","max_attempts":3}"#,
            "1-0",
        )
        .expect("valid message");
        assert_eq!(job.kind, JobKind::Sleep);
        assert_eq!(job.queue, "emails");
        assert_eq!(job.priority, Priority::High);
        assert_eq!(job.idempotency_key.as_deref(), Some("inbox:1-0"));
        assert!(matches!(
            NewJob::from_wire("{not json", "1-0"),
            Err(InvalidJob::Json(_))
        ));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"nope"}"#, "1-0"),
            Err(InvalidJob::UnknownKind(_))
        ));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"noop","colour":"red"}"#, "1-0"),
            Err(InvalidJob::Json(_))
        ));
    }

    #[test]
    fn every_kind_has_a_time_limit_and_jobs_may_set_their_own() {
        for kind in JobKind::ALL {
            assert!(!kind.default_timeout().is_zero(), "{kind}");
        }
        assert!(JobKind::Sleep.default_timeout() > Duration::from_millis(MAX_SLEEP_MS));
        let job = NewJob::from_wire(r#"{"kind":"noop","timeout":"90s"}"#, "1-0").expect("valid");
        assert_eq!(job.timeout, Some(Duration::from_secs(90)));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"noop","timeout":"soon"}"#, "1-0"),
            Err(InvalidJob::Timeout(_))
        ));
        let noop = NewJob::new(JobKind::Noop, json!({}));
        assert!(matches!(
            noop.clone().with_timeout(Duration::ZERO).validate(),
            Err(InvalidJob::Timeout(_))
        ));
        assert!(matches!(
            noop.with_timeout(MAX_JOB_TIMEOUT * 2).validate(),
            Err(InvalidJob::Timeout(_))
        ));
    }

    #[test]
    fn priorities_order_high_first() {
        let mut all = vec![Priority::Low, Priority::High, Priority::Normal];
        all.sort_by_key(|priority| priority.as_db());
        assert_eq!(all, Priority::ALL);
    }
}
