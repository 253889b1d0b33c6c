//! The inbox wire format: a job as services in other languages write it to the Redis
//! inbox stream, and how such a message becomes a validated [`NewJob`]. Kept apart
//! from [`crate::job`] so that the job model needs neither the kind registry nor
//! duration parsing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;
use crate::job::{InvalidJob, MAX_PAYLOAD_BYTES, NewJob};
use crate::kind::Kinds;

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
    /// The job's concurrency key (see `NewJob::concurrency_key`).
    #[serde(default)]
    pub concurrency_key: Option<String>,
}

/// Room for the envelope around a payload in a wire message.
const WIRE_OVERHEAD_BYTES: usize = 8 * 1024;

impl NewJob {
    /// Parses and validates an inbox message. `fallback_key` (the stream entry id)
    /// becomes the idempotency key when the message has none, so ingesting the same
    /// entry twice makes one job.
    pub fn from_wire(body: &str, fallback_key: &str, kinds: &Kinds) -> Result<NewJob, InvalidJob> {
        if body.len() > MAX_PAYLOAD_BYTES + WIRE_OVERHEAD_BYTES {
            return Err(InvalidJob::PayloadTooLarge { size: body.len() });
        }
        let wire: WireJob =
            serde_json::from_str(body).map_err(|err| InvalidJob::Json(err.to_string()))?;
        let mut job = NewJob::new(
            kinds.parse(&wire.kind)?,
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
            job.timeout = Some(parse_duration(&timeout).map_err(InvalidJob::Timeout)?);
        }
        job.concurrency_key = wire.concurrency_key;
        job.idempotency_key = Some(
            wire.idempotency_key
                .unwrap_or_else(|| format!("inbox:{fallback_key}")),
        );
        kinds.validate(&job)?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::builtin;
    use crate::job::{JobKind, Priority};

    #[test]
    fn parses_wire_messages() {
        let kinds = builtin::kinds().expect("core kinds");
        let job = NewJob::from_wire(
            r#"{"kind":"sleep","payload":{"ms":5},"queue":"emails","priority":"high","max_attempts":3}"#,
            "1-0",
            &kinds,
        )
        .expect("valid message");
        assert_eq!(job.kind, JobKind::Sleep);
        assert_eq!(job.queue, "emails");
        assert_eq!(job.priority, Priority::High);
        assert_eq!(job.idempotency_key.as_deref(), Some("inbox:1-0"));
        assert!(matches!(
            NewJob::from_wire("{not json", "1-0", &kinds),
            Err(InvalidJob::Json(_))
        ));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"nope"}"#, "1-0", &kinds),
            Err(InvalidJob::UnknownKind { .. })
        ));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"noop","colour":"red"}"#, "1-0", &kinds),
            Err(InvalidJob::Json(_))
        ));
    }

    #[test]
    fn wire_messages_may_name_a_concurrency_key() {
        let kinds = builtin::kinds().expect("core kinds");
        let job = NewJob::from_wire(
            r#"{"kind":"noop","concurrency_key":"tenant:42"}"#,
            "1-0",
            &kinds,
        )
        .expect("valid");
        assert_eq!(job.concurrency_key.as_deref(), Some("tenant:42"));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"noop","concurrency_key":""}"#, "1-0", &kinds),
            Err(InvalidJob::ConcurrencyKey(_))
        ));
    }

    #[test]
    fn wire_messages_may_set_a_time_limit() {
        let kinds = builtin::kinds().expect("core kinds");
        let job =
            NewJob::from_wire(r#"{"kind":"noop","timeout":"90s"}"#, "1-0", &kinds).expect("valid");
        assert_eq!(job.timeout, Some(Duration::from_secs(90)));
        assert!(matches!(
            NewJob::from_wire(r#"{"kind":"noop","timeout":"soon"}"#, "1-0", &kinds),
            Err(InvalidJob::Timeout(_))
        ));
    }
}
