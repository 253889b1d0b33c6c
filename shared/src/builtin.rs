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

    #[test]
    fn the_core_kinds_register() {
        let kinds = kinds().expect("core kinds register");
        assert_eq!(kinds.names(), vec!["noop", "sleep"]);
    }
}
