//! The job state machine: every state, every transition, and the rules that pick the
//! next state after a failure. The store binds these values into its conditional
//! updates, so no SQL statement decides a job's state on its own.
//!
//! ```text
//!             enqueue                claim                succeed
//!   (new) ───────────▶ queued ───────────────▶ running ───────────▶ succeeded
//!                       ▲  │                    │  │ │
//!        retry (backoff)│  │ cancel             │  │ └──fail, attempts left / lease expired / release──▶ queued
//!                       └──┼────────────────────┘  │
//!                          ▼                       ├──fail, no attempts left / fatal──▶ dead
//!                      cancelled ◀────cancel───────┘
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Where a job is in its life. `succeeded`, `dead` and `cancelled` are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

/// `state IN ('succeeded', 'dead', 'cancelled')`, spelled from [`JobState`]: for the
/// statements that must repeat the partial `jobs_finished` index's predicate literally
/// (a bound parameter would not let the planner use the index).
pub fn terminal_states_sql() -> String {
    let states: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|state| state.is_terminal())
        .map(|state| format!("'{}'", state.as_str()))
        .collect();
    format!("state IN ({})", states.join(", "))
}

/// Shown and serialized as its text (`--json` keeps `"state": "queued"`).
impl serde::Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Makes a state enum (with `as_str` and `FromStr<Err = String>`) read from and bound
/// into SQL as its text, and comparable with its text (`row.state == "dead"`), so rows
/// carry typed states and no statement spells a state out. The tables' CHECKs hold
/// only known states.
#[macro_export]
macro_rules! state_as_sql_text {
    ($name:ty) => {
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl<'a> tokio_postgres::types::FromSql<'a> for $name {
            fn from_sql(
                ty: &tokio_postgres::types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
                text.parse::<$name>().map_err(|err: String| err.into())
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::FromSql>::accepts(ty)
            }
        }

        impl tokio_postgres::types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &tokio_postgres::types::Type,
                out: &mut tokio_postgres::types::private::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
            {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::ToSql>::accepts(ty)
            }

            tokio_postgres::types::to_sql_checked!();
        }
    };
}

crate::state_as_sql_text!(JobState);

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!("unknown job state {s:?} (expected queued, running, succeeded, dead or cancelled)")
            })
    }
}

/// Every way a job's state can change. Each has fixed source states; the target is
/// fixed too except where a rule below picks it (failure, lease expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A new job enters the queue.
    Enqueue,
    /// A worker takes a due job; the attempt number goes up by one (with the claim's
    /// time, the fencing token: see `store::Claim`).
    Claim,
    /// The handler finished.
    Succeed,
    /// The handler failed with a retryable error and attempts are left: back to the
    /// queue with `run_at` pushed out by backoff.
    Retry,
    /// The handler failed for good, or ran out of attempts.
    Die,
    /// An operator or upstream service cancelled the job.
    Cancel,
    /// The worker holding the lease stopped heartbeating; the sweeper takes it back.
    ExpireLease,
    /// A worker shutting down hands back a job it could not finish; the attempt does
    /// not count against `max_attempts`.
    Release,
    /// An operator sends a dead (or cancelled) job back to the queue with fresh attempts.
    Revive,
    /// An operator hands back a running job whose worker is gone, without waiting for
    /// its lease to expire.
    Requeue,
}

impl Transition {
    /// Every transition, in declaration order (for checks that go over all of them).
    pub const ALL: [Transition; 10] = [
        Transition::Enqueue,
        Transition::Claim,
        Transition::Succeed,
        Transition::Retry,
        Transition::Die,
        Transition::Cancel,
        Transition::ExpireLease,
        Transition::Release,
        Transition::Revive,
        Transition::Requeue,
    ];

    /// The states a job may be in for this transition to apply.
    pub fn from(self) -> &'static [JobState] {
        use JobState::*;
        match self {
            Transition::Enqueue => &[],
            Transition::Claim => &[Queued],
            Transition::Succeed
            | Transition::Retry
            | Transition::Die
            | Transition::ExpireLease
            | Transition::Release
            | Transition::Requeue => &[Running],
            Transition::Cancel => &[Queued, Running],
            Transition::Revive => &[Dead, Cancelled],
        }
    }

    /// The state the job ends in. Lease expiry goes to `dead` instead when the
    /// attempts are used up (see [`after_lease_expiry`]).
    pub fn to(self) -> JobState {
        match self {
            Transition::Enqueue
            | Transition::Retry
            | Transition::ExpireLease
            | Transition::Release
            | Transition::Revive
            | Transition::Requeue => JobState::Queued,
            Transition::Claim => JobState::Running,
            Transition::Succeed => JobState::Succeeded,
            Transition::Die => JobState::Dead,
            Transition::Cancel => JobState::Cancelled,
        }
    }

    /// The source states as strings, for binding into SQL.
    pub fn from_strs(self) -> Vec<&'static str> {
        self.from().iter().map(|state| state.as_str()).collect()
    }

    /// The short word recorded in `job_events.message` for this transition.
    pub fn label(self) -> &'static str {
        match self {
            Transition::Enqueue => "enqueued",
            Transition::Claim => "claimed",
            Transition::Succeed => "succeeded",
            Transition::Retry => "retry scheduled",
            Transition::Die => "dead",
            Transition::Cancel => "cancelled",
            Transition::ExpireLease => "lease expired",
            Transition::Release => "released on shutdown",
            Transition::Revive => "retried by operator",
            Transition::Requeue => "requeued by operator",
        }
    }
}

/// How a handler run ended, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunResult {
    Succeeded,
    /// A failure worth trying again (a daemon hiccup, a timeout).
    Retryable(String),
    /// A failure that will fail again (invalid payload, missing image).
    Fatal(String),
}

/// The transition that records a run's result, given the attempt that ran.
pub fn after_run(result: &RunResult, attempt: i64, max_attempts: i64) -> Transition {
    match result {
        RunResult::Succeeded => Transition::Succeed,
        RunResult::Retryable(_) if attempt < max_attempts => Transition::Retry,
        RunResult::Retryable(_) | RunResult::Fatal(_) => Transition::Die,
    }
}

/// The state after an expired lease: another try if attempts are left.
pub fn after_lease_expiry(attempt: i64, max_attempts: i64) -> JobState {
    if attempt < max_attempts {
        JobState::Queued
    } else {
        JobState::Dead
    }
}

/// Exponential backoff with jitter: `base * 2^(attempt-1)`, capped at `max`, then a
/// random point in its upper half so that retries of a burst spread out.
pub fn retry_delay(attempt: i64, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.clamp(1, 32) as u32 - 1;
    let full = base.saturating_mul(2u32.saturating_pow(exponent)).min(max);
    let half = full / 2;
    // uuid's v4 generator is already a dependency and a fine source of jitter.
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u32;
    half + half.mul_f64(f64::from(random) / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_start_from_live_states_only() {
        for transition in [
            Transition::Claim,
            Transition::Succeed,
            Transition::Retry,
            Transition::Die,
            Transition::Cancel,
            Transition::ExpireLease,
            Transition::Release,
            Transition::Requeue,
        ] {
            assert!(transition.from().iter().all(|state| !state.is_terminal()));
        }
        assert!(
            Transition::Revive
                .from()
                .iter()
                .all(|state| state.is_terminal())
        );
    }

    #[test]
    fn all_lists_every_transition_in_order() {
        // A new variant breaks this match until it gets a position here and in ALL.
        let position = |transition: Transition| match transition {
            Transition::Enqueue => 0,
            Transition::Claim => 1,
            Transition::Succeed => 2,
            Transition::Retry => 3,
            Transition::Die => 4,
            Transition::Cancel => 5,
            Transition::ExpireLease => 6,
            Transition::Release => 7,
            Transition::Revive => 8,
            Transition::Requeue => 9,
        };
        for (index, transition) in Transition::ALL.into_iter().enumerate() {
            assert_eq!(position(transition), index, "{transition:?}");
        }
    }

    #[test]
    fn failure_rules() {
        let retry = RunResult::Retryable("boom".into());
        assert_eq!(after_run(&retry, 1, 3), Transition::Retry);
        assert_eq!(after_run(&retry, 3, 3), Transition::Die);
        assert_eq!(
            after_run(&RunResult::Fatal("bad".into()), 1, 3),
            Transition::Die
        );
        assert_eq!(after_run(&RunResult::Succeeded, 3, 3), Transition::Succeed);
        assert_eq!(after_lease_expiry(2, 3), JobState::Queued);
        assert_eq!(after_lease_expiry(3, 3), JobState::Dead);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        let first = retry_delay(1, base, max);
        assert!(first >= Duration::from_millis(50) && first <= base);
        let tenth = retry_delay(10, base, max);
        assert!(tenth >= Duration::from_millis(500) && tenth <= max);
    }

    #[test]
    fn states_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("finished".parse::<JobState>().is_err());
    }
}
