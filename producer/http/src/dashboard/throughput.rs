//! `/v1/queues/throughput` (jobs finished per queue in time buckets, JSON) and
//! `/v1/queues/{queue}/throughput.svg` (the same series as a small chart): what the
//! dashboard's queue view draws. Thin mappings onto `Inspector::throughput`; counts
//! are queue-wide, shown to every caller like `/v1/queues`.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lc_producer::inspect::QueueThroughput;
use lc_shared::config::parse_duration;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

/// The window and bucket of a series.
#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// How far back (1h by default).
    pub window: Option<String>,
    /// How long one bucket is (1m by default); the window holds at most 1440.
    pub bucket: Option<String>,
}

impl SeriesQuery {
    fn durations(&self) -> ApiResult<(Duration, Duration)> {
        let parse = |field: &str, text: &Option<String>, default: u64| match text {
            Some(text) => {
                parse_duration(text).map_err(|err| ApiError::invalid(format!("{field}: {err}")))
            }
            None => Ok(Duration::from_secs(default)),
        };
        Ok((
            parse("window", &self.window, 3600)?,
            parse("bucket", &self.bucket, 60)?,
        ))
    }
}

/// Per queue, the jobs that succeeded and died in each bucket of the window, oldest
/// bucket first (the last one ends now).
#[utoipa::path(get, path = "/v1/queues/throughput", tag = "queues", params(SeriesQuery),
    responses(
        (status = 200, description = "Series by queue name", body = [QueueThroughput]),
        (status = 400, description = "An unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid window or bucket", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn series(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<SeriesQuery>,
) -> ApiResult<Json<Vec<QueueThroughput>>> {
    let (window, bucket) = query.durations()?;
    Ok(Json(
        caller.inspector(&state).throughput(window, bucket).await?,
    ))
}

/// One queue's series as an SVG chart: succeeded jobs per bucket upwards (green),
/// dead ones downwards (red); the totals in its title.
#[utoipa::path(get, path = "/v1/queues/{queue}/throughput.svg", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name"), SeriesQuery),
    responses(
        (status = 200, description = "The chart", content_type = "image/svg+xml", body = String),
        (status = 400, description = "An unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid queue name, window or bucket", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn chart(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    Query(query): Query<SeriesQuery>,
) -> ApiResult<Response> {
    let (window, bucket) = query.durations()?;
    let series = caller
        .inspector(&state)
        .queue_throughput(&queue, window, bucket)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            // An SVG opened on its own runs nothing and loads nothing.
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::chart::render(&series),
    )
        .into_response())
}
