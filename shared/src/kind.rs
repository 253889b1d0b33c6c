//! Job kinds as units. A kind is a type that implements [`JobType`]: its name, its
//! payload type, how the payload is checked, and its defaults (queue, priority,
//! attempts, time limit). A [`Kinds`] registry holds the kinds a process knows; the
//! producer refuses a job whose kind it does not hold, the inbox ingester does the same,
//! and the worker adds a handler per kind (`lc_worker::handlers::Registry`).
//!
//! The built-in kinds are registered like any other (`crate::builtin::kinds`). A
//! library user adds one in a few lines:
//!
//! ```
//! use lc_shared::kind::{JobType, Kinds};
//! use lc_shared::JobKind;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Resize { url: String, width: u32 }
//!
//! struct ResizeImage;
//! impl JobType for ResizeImage {
//!     const KIND: JobKind = JobKind::named("resize_image");
//!     type Payload = Resize;
//!     fn check(payload: &Resize) -> Result<(), String> {
//!         (payload.width > 0).then_some(()).ok_or_else(|| "width must be positive".into())
//!     }
//! }
//!
//! let kinds = lc_shared::builtin::kinds().with::<ResizeImage>().unwrap();
//! assert!(kinds.get("resize_image").is_some());
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::job::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, InvalidJob, JobKind, MAX_JOB_TIMEOUT, MAX_MAX_ATTEMPTS,
    NewJob, Priority, validate_queue_name,
};

/// A job kind: what producers and workers must agree on.
pub trait JobType: Send + Sync + 'static {
    /// The kind's name, as stored in job rows.
    const KIND: JobKind;
    /// What a job of this kind carries. Unknown fields are best refused
    /// (`#[serde(deny_unknown_fields)]`), so that a typo is reported at enqueue.
    type Payload: Serialize + DeserializeOwned + Send + 'static;
    /// Queue of jobs made with [`JobType::job`].
    const QUEUE: &'static str = DEFAULT_QUEUE;
    const PRIORITY: Priority = Priority::Normal;
    const MAX_ATTEMPTS: i64 = DEFAULT_MAX_ATTEMPTS;
    /// How long one attempt may run before it is stopped and fails as retryable
    /// (unless the job or the worker's `--kind-timeout` says otherwise).
    const TIMEOUT: Duration = Duration::from_secs(3600);

    /// Checks a payload beyond its type; `Err` says what is wrong.
    fn check(_payload: &Self::Payload) -> Result<(), String> {
        Ok(())
    }

    /// A new job of this kind with the kind's defaults.
    fn job(payload: &Self::Payload) -> Result<NewJob, InvalidJob> {
        let value =
            serde_json::to_value(payload).map_err(|err| InvalidJob::Json(err.to_string()))?;
        Ok(NewJob::new(Self::KIND, value)
            .with_queue(Self::QUEUE)
            .with_priority(Self::PRIORITY)
            .with_max_attempts(Self::MAX_ATTEMPTS))
    }
}

/// Checks a payload given as JSON.
type PayloadCheck = dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync;

/// A registered kind, as the registry keeps it.
#[derive(Clone)]
pub struct KindInfo {
    pub kind: JobKind,
    pub queue: &'static str,
    pub priority: Priority,
    pub max_attempts: i64,
    pub timeout: Duration,
    check: Arc<PayloadCheck>,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindInfo")
            .field("kind", &self.kind)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KindInfo {
    pub fn of<T: JobType>() -> KindInfo {
        KindInfo {
            kind: T::KIND,
            queue: T::QUEUE,
            priority: T::PRIORITY,
            max_attempts: T::MAX_ATTEMPTS,
            timeout: T::TIMEOUT,
            check: Arc::new(|value| {
                let payload: T::Payload =
                    serde_json::from_value(value.clone()).map_err(|err| err.to_string())?;
                T::check(&payload)
            }),
        }
    }

    /// Checks a payload of this kind.
    pub fn check(&self, payload: &serde_json::Value) -> Result<(), String> {
        (self.check)(payload)
    }
}

/// Why a kind cannot be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KindError {
    #[error(
        "invalid job kind name {0:?}: use 1 to 64 characters from a-z, 0-9 and '_', starting with a letter"
    )]
    Name(String),
    #[error("job kind {0} is registered twice")]
    Twice(String),
    #[error("job kind {kind}: {reason}")]
    Defaults { kind: String, reason: String },
}

/// The kinds a process knows. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Kinds {
    by_name: Arc<BTreeMap<&'static str, KindInfo>>,
}

impl Kinds {
    /// No kinds at all; see `crate::builtin::kinds` for the built-in ones.
    pub fn empty() -> Kinds {
        Kinds::default()
    }

    /// These kinds plus `T`.
    pub fn with<T: JobType>(self) -> Result<Kinds, KindError> {
        self.with_info(KindInfo::of::<T>())
    }

    /// These kinds plus one given by its info (how the worker's handler registry adds
    /// the kinds it runs).
    pub fn with_info(self, info: KindInfo) -> Result<Kinds, KindError> {
        let name = info.kind.as_str();
        if !JobKind::is_valid_name(name) {
            return Err(KindError::Name(name.to_owned()));
        }
        let defaults = |reason: String| KindError::Defaults {
            kind: name.to_owned(),
            reason,
        };
        validate_queue_name(info.queue).map_err(|err| defaults(err.to_string()))?;
        if !(1..=MAX_MAX_ATTEMPTS).contains(&info.max_attempts) {
            return Err(defaults(format!(
                "max attempts must be between 1 and {MAX_MAX_ATTEMPTS}"
            )));
        }
        if info.timeout.is_zero() || info.timeout > MAX_JOB_TIMEOUT {
            return Err(defaults(
                "the time limit must be more than 0 and at most 24h".into(),
            ));
        }
        let mut by_name = (*self.by_name).clone();
        if by_name.insert(name, info).is_some() {
            return Err(KindError::Twice(name.to_owned()));
        }
        Ok(Kinds {
            by_name: Arc::new(by_name),
        })
    }

    pub fn get(&self, name: &str) -> Option<&KindInfo> {
        self.by_name.get(name)
    }

    /// The registered kind of this name.
    pub fn parse(&self, name: &str) -> Result<JobKind, InvalidJob> {
        self.get(name)
            .map(|info| info.kind)
            .ok_or_else(|| self.unknown(name))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    fn unknown(&self, name: &str) -> InvalidJob {
        InvalidJob::UnknownKind {
            kind: name.to_owned(),
            known: self.names().join(", "),
        }
    }

    /// Everything checked before a job is written: its kind is known, its envelope is
    /// valid, and its kind accepts its payload.
    pub fn validate(&self, job: &NewJob) -> Result<(), InvalidJob> {
        let info = self
            .get(job.kind.as_str())
            .ok_or_else(|| self.unknown(job.kind.as_str()))?;
        job.validate_envelope()?;
        info.check(&job.payload)
            .map_err(|reason| InvalidJob::Payload {
                kind: job.kind,
                reason,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::{self, MAX_SLEEP_MS};
    use crate::job::MAX_PAYLOAD_BYTES;
    use serde_json::json;

    struct Odd;
    impl JobType for Odd {
        const KIND: JobKind = JobKind::named("odd");
        type Payload = serde_json::Value;
    }

    struct BadName;
    impl JobType for BadName {
        const KIND: JobKind = JobKind::named("Bad Name");
        type Payload = serde_json::Value;
    }

    #[test]
    fn registers_kinds_once_with_valid_names() {
        let kinds = Kinds::empty().with::<Odd>().expect("registers");
        assert_eq!(kinds.names(), vec!["odd"]);
        assert_eq!(
            kinds.clone().with::<Odd>().expect_err("twice"),
            KindError::Twice("odd".into())
        );
        assert!(matches!(
            Kinds::empty().with::<BadName>(),
            Err(KindError::Name(_))
        ));
        assert_eq!(kinds.parse("odd"), Ok(JobKind::named("odd")));
    }

    #[test]
    fn refuses_bad_input() {
        let kinds = builtin::kinds();
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
        let kinds = builtin::kinds();
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
