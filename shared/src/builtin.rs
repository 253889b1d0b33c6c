//! The kinds every LaunchControl process knows: `noop` and `sleep` (drills, tests and
//! benchmarks). Each is a [`JobType`] like a library user's own; [`Core`] is their list
//! and [`kinds`] the registry it forms. Domains add their own lists after it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::JobKind;
use crate::kind::{JobType, KindError, Kinds};

/// Longest `sleep` accepted: tests and drills, not a way to park workers.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

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

fn check_sleep(payload: &SleepPayload) -> Result<(), String> {
    if payload.ms > MAX_SLEEP_MS {
        return Err(format!("ms must be at most {MAX_SLEEP_MS}"));
    }
    Ok(())
}

/// Does nothing (its payload may use `sleep`'s fields except `ms`).
pub struct Noop;

impl JobType for Noop {
    const KIND: JobKind = JobKind::Noop;
    type Payload = SleepPayload;
    const TIMEOUT: Duration = Duration::from_secs(60);
    fn check(payload: &SleepPayload) -> Result<(), String> {
        check_sleep(payload)
    }
}

/// Sleeps `ms`, optionally failing its first attempts.
pub struct Sleep;

impl JobType for Sleep {
    const KIND: JobKind = JobKind::Sleep;
    type Payload = SleepPayload;
    // Above the longest sleep a payload may ask for (MAX_SLEEP_MS, one hour).
    const TIMEOUT: Duration = Duration::from_secs(65 * 60);
    fn check(payload: &SleepPayload) -> Result<(), String> {
        check_sleep(payload)
    }
}

/// The kinds of the queue core, in one list.
pub type Core = (Noop, Sleep);

/// The core's kinds as a registry. Fails only if a kind's name or defaults are invalid,
/// which a unit test rules out; the error names the kind.
pub fn kinds() -> Result<Kinds, KindError> {
    Kinds::empty().with_list::<Core>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{InvalidJob, MAX_JOB_TIMEOUT, MAX_PAYLOAD_BYTES, NewJob, Priority};
    use serde_json::json;

    #[test]
    fn the_core_kinds_register() {
        let kinds = kinds().expect("core kinds register");
        assert_eq!(kinds.names(), vec!["noop", "sleep"]);
    }

    #[test]
    fn refuses_bad_input() {
        let kinds = kinds().expect("core kinds");
        let ok = NewJob::new(JobKind::Noop, json!({}));
        assert_eq!(kinds.validate(&ok), Ok(()));
        assert!(matches!(
            kinds.validate(&ok.clone().with_queue("Bad Queue")),
            Err(InvalidJob::QueueName(_))
        ));
        assert!(matches!(
            kinds.validate(&ok.clone().with_queue("")),
            Err(InvalidJob::QueueName(_))
        ));
        assert!(matches!(
            kinds.validate(&ok.clone().with_max_attempts(0)),
            Err(InvalidJob::MaxAttempts(0))
        ));
        let big = NewJob::new(JobKind::Noop, json!({ "x": "a".repeat(MAX_PAYLOAD_BYTES) }));
        assert!(matches!(
            kinds.validate(&big),
            Err(InvalidJob::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            kinds.validate(&NewJob::new(JobKind::Noop, json!([1]))),
            Err(InvalidJob::PayloadNotObject)
        ));
        assert!(matches!(
            kinds.validate(&NewJob::new(JobKind::Sleep, json!({"ms": "soon"}))),
            Err(InvalidJob::Payload { .. })
        ));
        assert!(matches!(
            kinds.parse("frobnicate"),
            Err(InvalidJob::UnknownKind { .. })
        ));
        assert!(matches!(
            kinds.validate(&NewJob::new(JobKind::named("frobnicate"), json!({}))),
            Err(InvalidJob::UnknownKind { .. })
        ));
        assert!(matches!(
            "urgent".parse::<Priority>(),
            Err(InvalidJob::Priority(_))
        ));
    }

    #[test]
    fn every_kind_has_a_time_limit_and_jobs_may_set_their_own() {
        let kinds = kinds().expect("core kinds");
        for name in kinds.names() {
            assert!(
                !kinds.get(name).expect("registered").timeout.is_zero(),
                "{name}"
            );
        }
        assert!(
            kinds.get("sleep").expect("registered").timeout > Duration::from_millis(MAX_SLEEP_MS)
        );
        let noop = NewJob::new(JobKind::Noop, json!({}));
        assert!(matches!(
            kinds.validate(&noop.clone().with_timeout(Duration::ZERO)),
            Err(InvalidJob::Timeout(_))
        ));
        assert!(matches!(
            kinds.validate(&noop.with_timeout(MAX_JOB_TIMEOUT * 2)),
            Err(InvalidJob::Timeout(_))
        ));
    }
}
