//! What wraps every request: its request id (the caller's `x-request-id` when it is a
//! short printable value, a new UUID otherwise), answered in the `x-request-id`
//! header and carried by the request's log span; one log line per request (method,
//! route, status, duration: never headers, so never a token); the metrics. When traces
//! are exported, the request's span continues a caller's W3C `traceparent`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// The request id a caller sent, if it is usable as one.
fn callers_id(request: &Request) -> Option<String> {
    let value = request.headers().get(REQUEST_ID)?.to_str().ok()?;
    let usable = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    usable.then(|| value.to_owned())
}

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = callers_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", MatchedPath::as_str)
        .to_owned();
    let method = request.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, %method, %route,
                                   owner = tracing::field::Empty,
                                   token_id = tracing::field::Empty);
    // A caller that traces sends its context: the request continues its trace.
    if let Some(value) = request.headers().get("traceparent")
        && let Ok(value) = value.to_str()
    {
        lc_shared::telemetry::job_trace::continue_remote(&span, value);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = crate::error::problem_for_plain_errors(response)
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.observe(&route, &method, status, seconds);
    span.in_scope(|| {
        tracing::info!(status, ms = (seconds * 1000.0).round(), "answered");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
