//! A job's trace across the queue: the enqueue opens a span whose W3C `traceparent` is
//! stored with the job (`jobs.traceparent`); the worker that claims the job opens the
//! claim span under it, and the job's span (its handler, and the calls the handler
//! makes) under the claim. Jobs a handler enqueues are stamped from the handler's span,
//! so a deployment is one trace from `lc deploy create` to its last container.
//!
//! Off unless an exporter is installed ([`super::init`]): then every function here
//! returns at once, on one atomic load, without formatting or allocating, and jobs are
//! stored with a NULL `traceparent`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// A trace context: what [`claimed`] returns for the job's span.
pub use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::job::NewJob;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported (and so worth making and carrying).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn enable(tracer: SdkTracer) {
    let _ = TRACER.set(tracer);
    ENABLED.store(true, Ordering::Relaxed);
}

/// After the exporter shut down: nothing more is made.
pub(super) fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// The span of one enqueue call (`enqueue`, kind producer), a child of the caller's
/// current span; [`Span::none`] when tracing is off. Its attributes: the first job's
/// kind and queue, and how many jobs the call enqueues. Never a payload.
pub fn enqueue_span(jobs: &[NewJob]) -> Span {
    if !enabled() {
        return Span::none();
    }
    let first = jobs.first();
    tracing::info_span!(
        "enqueue",
        otel.kind = "producer",
        job.kind = first.map(|job| job.kind.as_str()),
        job.queue = first.map(|job| job.queue.as_str()),
        jobs = jobs.len(),
    )
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), or `None` when
/// tracing is off or the span is not traced.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut captured = Captured(None);
    TraceContextPropagator::new().inject_context(&context, &mut captured);
    captured.0
}

/// [`traceparent_of`] the current span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// What the claim of one job tells its trace.
pub struct Claim<'a> {
    pub job_id: Uuid,
    pub kind: &'a str,
    pub queue: &'a str,
    pub attempt: i64,
    pub worker_id: Uuid,
    /// The `traceparent` stored with the job; `None` starts a trace of the job's own.
    pub traceparent: Option<&'a str>,
    /// When the claim statement was sent.
    pub started: SystemTime,
    /// Jobs the same statement claimed.
    pub batch: usize,
}

/// Records the claim span (`claim <kind>`, kind consumer) under the job's stored
/// context, from when the claim statement was sent until now, and returns the context
/// the job's own span goes under; `None` when tracing is off.
pub fn claimed(claim: &Claim<'_>) -> Option<Context> {
    if !enabled() {
        return None;
    }
    let tracer = TRACER.get()?;
    let parent = claim
        .traceparent
        .map(|value| TraceContextPropagator::new().extract(&Stored(value)))
        .unwrap_or_default();
    let mut span = tracer
        .span_builder(format!("claim {}", claim.kind))
        .with_kind(SpanKind::Consumer)
        .with_start_time(claim.started)
        .with_attributes([
            KeyValue::new("job.id", claim.job_id.to_string()),
            KeyValue::new("job.kind", claim.kind.to_owned()),
            KeyValue::new("job.queue", claim.queue.to_owned()),
            KeyValue::new("job.attempt", claim.attempt),
            KeyValue::new("worker.id", claim.worker_id.to_string()),
            KeyValue::new(
                "claim.batch",
                i64::try_from(claim.batch).unwrap_or(i64::MAX),
            ),
        ])
        .start_with_context(tracer, &parent);
    opentelemetry::trace::Span::end(&mut span);
    Some(parent.with_span(span))
}

/// Puts `span` (a job's span, not yet entered) under `parent` from [`claimed`].
pub fn set_parent(span: &Span, parent: Option<Context>) {
    if let Some(parent) = parent {
        // Fails only when the span is disabled or already started: then it keeps its own.
        let _ = span.set_parent(parent);
    }
}

/// Puts `span` (not yet entered) under the caller's trace named by an incoming W3C
/// `traceparent` header; nothing when tracing is off or the value is not one.
pub fn continue_remote(span: &Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Stored(traceparent));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// A stored `traceparent`, read as the one header of a carrier.
struct Stored<'a>(&'a str);

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// Keeps the `traceparent` an injection writes (and drops `tracestate`).
struct Captured(Option<String>);

impl Injector for Captured {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}
