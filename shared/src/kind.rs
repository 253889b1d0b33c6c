//! Job kinds as units. A kind is a type that implements [`JobType`]: its name, its
//! payload type, how the payload is checked, and its defaults (queue, priority,
//! attempts, time limit). A [`Kinds`] registry holds the kinds a process knows; the
//! producer refuses a job whose kind it does not hold, the inbox ingester does the same,
//! and the worker adds a handler per kind (`lc_worker::handlers::Registry`).
//!
//! Kinds that belong together are listed once, as a tuple type ([`KindList`]), and that
//! one list registers them on both sides: [`Kinds::with_list`] here, the worker's
//! handler registry from the same tuple. A library user adds a kind in a few lines:
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
//! let kinds = lc_shared::builtin::kinds().unwrap().with::<ResizeImage>().unwrap();
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

/// A payload type that knows its kind, as River's `JobArgs` do: code that makes jobs
/// from a typed payload (a domain's store, enqueueing inside its transactions) names
/// the payload and reaches the kind through it ([`KindOf`]), not the kind's module. So a
/// kind may live in one file with its handler, which uses that code, without the two
/// modules using each other. Implemented once per kind, beside the kind.
pub trait KindPayload: Serialize + DeserializeOwned + Send + 'static {
    /// The kind whose jobs carry this payload.
    type Kind: JobType<Payload = Self>;
}

/// The kind of payload `P`: `KindOf::<P>::KIND`, `KindOf::<P>::job(&payload)`.
pub type KindOf<P> = <P as KindPayload>::Kind;

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

    /// These kinds plus every kind of a list, e.g. `Kinds::empty().with_list::<(A, B)>()`.
    pub fn with_list<L: KindList>(self) -> Result<Kinds, KindError> {
        L::register(self)
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

/// Kinds registered together, written once as a tuple of [`JobType`]s: `(Noop, Sleep)`.
/// The same tuple registers the kinds' handlers on a worker, so producers and workers
/// cannot disagree on what the list holds.
pub trait KindList {
    /// `kinds` plus every kind of the list, in order.
    fn register(kinds: Kinds) -> Result<Kinds, KindError>;
}

macro_rules! kind_lists {
    ($(($($t:ident)+))+) => {$(
        impl<$($t: JobType),+> KindList for ($($t,)+) {
            fn register(kinds: Kinds) -> Result<Kinds, KindError> {
                $(let kinds = kinds.with::<$t>()?;)+
                Ok(kinds)
            }
        }
    )+};
}

kind_lists! {
    (A) (A B) (A B C) (A B C E) (A B C E F) (A B C E F G) (A B C E F G H)
    (A B C E F G H I) (A B C E F G H I J) (A B C E F G H I J K)
    (A B C E F G H I J K L) (A B C E F G H I J K L M)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    struct Even;
    impl JobType for Even {
        const KIND: JobKind = JobKind::named("even");
        type Payload = serde_json::Value;
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct OddPayload {}
    impl KindPayload for OddPayload {
        type Kind = Typed;
    }
    struct Typed;
    impl JobType for Typed {
        const KIND: JobKind = JobKind::named("typed");
        type Payload = OddPayload;
    }

    #[test]
    fn a_payload_names_its_kind() {
        assert_eq!(KindOf::<OddPayload>::KIND, Typed::KIND);
        let job = KindOf::<OddPayload>::job(&OddPayload {}).expect("a job");
        assert_eq!(job.kind.as_str(), "typed");
    }

    #[test]
    fn a_list_registers_each_of_its_kinds() {
        let kinds = Kinds::empty()
            .with_list::<(Odd, Even)>()
            .expect("registers");
        assert_eq!(kinds.names(), vec!["even", "odd"]);
        assert_eq!(
            Kinds::empty().with_list::<(Odd, Odd)>().expect_err("twice"),
            KindError::Twice("odd".into())
        );
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
}
