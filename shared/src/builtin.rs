//! The kinds every LaunchControl process knows: `noop` and `sleep` (drills, tests and
//! benchmarks) and the deployment kinds. Each is a [`JobType`] like a library user's
//! own; [`kinds`] is the registry they form.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::deployment::kinds::{Deploy, Provision, ProvisionMachine, Teardown};
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

/// The built-in kinds (made once; a clone shares them).
pub fn kinds() -> Kinds {
    BUILTIN.clone()
}

static BUILTIN: std::sync::LazyLock<Kinds> = std::sync::LazyLock::new(|| {
    // The built-in kinds have valid, distinct names and defaults (a unit test checks).
    register().unwrap_or_default()
});

fn register() -> Result<Kinds, KindError> {
    Kinds::empty()
        .with::<Noop>()?
        .with::<Sleep>()?
        .with::<Provision>()?
        .with::<ProvisionMachine>()?
        .with::<Deploy>()?
        .with::<Teardown>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_kinds_register() {
        let kinds = register().expect("built-in kinds register");
        assert_eq!(kinds.names().len(), 6);
        assert_eq!(super::kinds().names(), kinds.names());
    }
}
