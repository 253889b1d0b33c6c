//! What each job kind does. A kind is a [`JobType`] (shared with producers) that also
//! implements [`Handler`]: given a [`JobContext`] and its payload, it returns `Ok(())` or
//! a [`JobError`] that says whether trying again can help. A [`Registry`] holds the
//! handlers a worker runs, and the state they share; the core's kinds (`noop`, `sleep`)
//! are registered like any other.

mod context;
mod testing;

use std::any::{Any, TypeId};
use std::error::Error as StdError;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use lc_shared::builtin;
use lc_shared::events::{Event, EventSource};
use lc_shared::kind::{JobType, KindError, KindInfo, Kinds};
use lc_shared::state::RunResult;
use lc_shared::store::{ClaimedJob, error_chain};

pub use context::JobContext;

/// A boxed error source, kept so logs and job rows show the whole chain.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Trying again may work (a daemon hiccup, a timeout, a lost connection).
    #[error("{message}")]
    Retryable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Trying again will fail the same way (invalid payload, missing image).
    #[error("{message}")]
    Fatal {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The handler stopped because its token was cancelled.
    #[error("stopped: job cancelled, lease lost or worker shutting down")]
    Cancelled,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> JobError {
        JobError::Retryable {
            message: message.into(),
            source: None,
        }
    }

    pub fn fatal(message: impl Into<String>) -> JobError {
        JobError::Fatal {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps a cause as retryable, keeping it as the source.
    pub fn retryable_from(message: impl Into<String>, source: impl Into<BoxError>) -> JobError {
        JobError::Retryable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn fatal_from(message: impl Into<String>, source: impl Into<BoxError>) -> JobError {
        JobError::Fatal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub fn into_run_result(self) -> RunResult {
        let text = error_chain(&self);
        match self {
            JobError::Retryable { .. } | JobError::Cancelled => RunResult::Retryable(text),
            JobError::Fatal { .. } => RunResult::Fatal(text),
        }
    }
}

/// What a worker does with jobs of a kind.
///
/// A kind defined beside its handler (the deployment domain's, each in one file with
/// its handler behind a cargo feature that producers leave off) just implements
/// `Handler`. `Domain` lets a crate implement this for kinds that another crate defines
/// (Rust allows `impl Handler<Local> for Foreign`, a marker type of the implementing
/// crate).
pub trait Handler<Domain = ()>: JobType {
    /// Runs one attempt. The payload was checked at enqueue; a payload that does not
    /// parse any more (an older producer) fails the job as fatal before this is called.
    fn run(
        context: &JobContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}

type RunFn = for<'a> fn(&'a JobContext) -> BoxFuture<'a, Result<(), JobError>>;

/// Parses the payload and runs `H`. Boxed: some handlers' futures are large (many awaits
/// on docker-machine and the database), and a job's task should not carry them inline.
fn run_erased<D, H: Handler<D>>(context: &JobContext) -> BoxFuture<'_, Result<(), JobError>> {
    Box::pin(async move {
        let payload = context.payload::<H::Payload>()?;
        H::run(context, payload).await
    })
}

/// State that handlers share, one value per type (a domain's store, its settings).
type States = BTreeMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// Called as each handler starts, before it runs, with when its claim was made (see
/// [`Registry::on_handler_start`]).
pub type StartObserver = fn(&ClaimedJob, &ClaimTimes);

/// The wall-clock moments of a job's way from its hint to its handler, for a
/// [`StartObserver`] (the benchmark splits enqueue→handler into legs with them). Read
/// only when something looks at them: traces or an observer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClaimTimes {
    /// When the pop that brought the job's hint returned; `None` for a job claimed
    /// from the database without a hint.
    pub popped: Option<SystemTime>,
    /// When the claim statement went out.
    pub sent: Option<SystemTime>,
    /// When the claim's answer (its commit) came back.
    pub claimed: Option<SystemTime>,
}

/// Called by the event relay with each batch it added to the stream, before the batch
/// is marked published (see [`Registry::on_events_sent`]).
pub type EventsObserver = fn(&[Event]);

/// Handlers registered together: a tuple of kinds that each implement
/// `Handler<Domain>`, the same tuple as the [`lc_shared::kind::KindList`] its producers
/// use, so both sides hold one list.
pub trait HandlerList<Domain = ()> {
    /// `registry` plus the handler of every kind of the list, in order.
    fn register(registry: Registry) -> Result<Registry, KindError>;
}

macro_rules! handler_lists {
    ($(($($t:ident)+))+) => {$(
        impl<D: 'static, $($t: Handler<D>),+> HandlerList<D> for ($($t,)+) {
            fn register(registry: Registry) -> Result<Registry, KindError> {
                $(let registry = registry.with_in::<D, $t>()?;)+
                Ok(registry)
            }
        }
    )+};
}

handler_lists! {
    (A) (A B) (A B C) (A B C E) (A B C E F) (A B C E F G) (A B C E F G H)
    (A B C E F G H I) (A B C E F G H I J) (A B C E F G H I J K)
    (A B C E F G H I J K L) (A B C E F G H I J K L M)
}

/// The kinds a worker runs: each kind's [`KindInfo`] (for the inbox, time limits), its
/// handler, and the state handlers share; and the event sources its relay publishes
/// besides the jobs' own. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Registry {
    kinds: Kinds,
    handlers: Arc<BTreeMap<&'static str, RunFn>>,
    states: Arc<States>,
    on_start: Option<StartObserver>,
    event_sources: Arc<Vec<Arc<dyn EventSource>>>,
    on_events_sent: Option<EventsObserver>,
}

impl Registry {
    /// The core's kinds, `noop` and `sleep` ([`lc_shared::builtin::Core`]).
    pub fn core() -> Result<Registry, KindError> {
        Registry::default().with_list::<builtin::Core>()
    }

    /// This registry plus `H`.
    pub fn with<H: Handler>(self) -> Result<Registry, KindError> {
        self.with_in::<(), H>()
    }

    /// This registry plus `H`, a handler of the domain `D` (see [`Handler`]).
    pub fn with_in<D: 'static, H: Handler<D>>(self) -> Result<Registry, KindError> {
        let kinds = self.kinds.with_info(KindInfo::of::<H>())?;
        let mut handlers = (*self.handlers).clone();
        handlers.insert(H::KIND.as_str(), run_erased::<D, H> as RunFn);
        Ok(Registry {
            kinds,
            handlers: Arc::new(handlers),
            ..self
        })
    }

    /// This registry plus the handlers of a list, e.g. `with_list::<(A, B)>()`.
    pub fn with_list<L: HandlerList>(self) -> Result<Registry, KindError> {
        L::register(self)
    }

    /// This registry plus the handlers of a list of the domain `D`.
    pub fn with_list_in<D, L: HandlerList<D>>(self) -> Result<Registry, KindError> {
        L::register(self)
    }

    /// Gives handlers a shared value of type `T` (a domain's store or settings), which
    /// they read with [`JobContext::state`]. A second value of one type replaces the
    /// first.
    pub fn with_state<T: Any + Send + Sync>(self, value: T) -> Registry {
        let mut states = (*self.states).clone();
        states.insert(TypeId::of::<T>(), Arc::new(value));
        Registry {
            states: Arc::new(states),
            ..self
        }
    }

    /// Calls `observer` as each handler starts (the benchmark times enqueue→start with
    /// it). It runs on the job's task: keep it short.
    pub fn on_handler_start(self, observer: StartObserver) -> Registry {
        Registry {
            on_start: Some(observer),
            ..self
        }
    }

    /// This registry plus a domain's history as events: the worker's event relay
    /// publishes it after the jobs' own ([`lc_shared::events::JobEvents`], always
    /// there), in the order sources were added.
    pub fn with_event_source(self, source: impl EventSource) -> Registry {
        let mut sources = (*self.event_sources).clone();
        sources.push(Arc::new(source));
        Registry {
            event_sources: Arc::new(sources),
            ..self
        }
    }

    /// The event sources added with [`Registry::with_event_source`].
    pub fn event_sources(&self) -> &[Arc<dyn EventSource>] {
        &self.event_sources
    }

    /// Calls `observer` with each batch of events the relay added to the stream, after
    /// the send and before the batch is marked published (the crash drill of the tests
    /// stops there). It runs on the relay's task: keep it short.
    pub fn on_events_sent(self, observer: EventsObserver) -> Registry {
        Registry {
            on_events_sent: Some(observer),
            ..self
        }
    }

    pub(crate) fn events_observer(&self) -> Option<EventsObserver> {
        self.on_events_sent
    }

    /// The shared value of type `T`, if one was given.
    pub(crate) fn state<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.states
            .get(&TypeId::of::<T>())
            .and_then(|value| value.downcast_ref::<T>())
    }

    /// The kinds, as producers and the inbox ingester check them.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// The built-in time limit of a kind.
    pub fn timeout(&self, kind: &str) -> Option<Duration> {
        self.kinds.get(kind).map(|info| info.timeout)
    }

    /// Whether the claim's moments are wanted ([`Registry::on_handler_start`]).
    pub(crate) fn observes_starts(&self) -> bool {
        self.on_start.is_some()
    }

    /// Runs the handler of the job's kind.
    pub(crate) async fn run(&self, context: &JobContext) -> Result<(), JobError> {
        let job = context.job();
        if let Some(observer) = self.on_start {
            observer(job, &context.claim_times());
        }
        let Some(run) = self.handlers.get(job.kind.as_str()) else {
            return Err(JobError::fatal(format!(
                "this worker cannot run jobs of kind {:?} (it runs: {})",
                job.kind,
                self.kinds.names().join(", ")
            )));
        };
        run(context).await
    }
}
