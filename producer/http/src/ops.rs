//! `/v1/queues` (depths and throughput; pause, resume and concurrency limits, for
//! admins), `/v1/workers`, `/v1/stuck`: what `lc queues`, `lc workers` and `lc stuck`
//! show. Queue and worker figures are counts, shown to every caller; stuck findings
//! name jobs, so a caller sees only its own unless it is an admin.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use lc_producer::inspect::{Finding, QueueStats, StuckParams, Worker};
use lc_shared::config::parse_duration;
use lc_shared::store::ConcurrencyKeyRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

fn age(field: &str, text: Option<String>, default: Duration) -> ApiResult<Duration> {
    match text {
        Some(text) => {
            parse_duration(&text).map_err(|err| ApiError::invalid(format!("{field}: {err}")))
        }
        None => Ok(default),
    }
}

/// Every queue with its depth by state, paused flag and throughput.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, description = "Queues by name", body = [QueueStats])))]
pub async fn queues(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<QueueStats>>> {
    Ok(Json(caller.inspector(&state).queues().await?))
}

/// A queue's paused flag after a pause or resume.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueuePaused {
    pub queue: String,
    pub paused: bool,
}

/// Workers stop taking jobs of the queue (running jobs finish). Admin only.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "Paused", body = QueuePaused),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid queue name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePaused>> {
    caller.require_admin("pausing a queue")?;
    caller.inspector(&state).pause_queue(&queue).await?;
    Ok(Json(QueuePaused {
        queue,
        paused: true,
    }))
}

/// Workers take jobs of the queue again. Admin only.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", tag = "queues",
    params(("queue" = String, Path, description = "The queue's name")),
    responses(
        (status = 200, description = "Resumed", body = QueuePaused),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid queue name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePaused>> {
    caller.require_admin("resuming a queue")?;
    caller.inspector(&state).resume_queue(&queue).await?;
    Ok(Json(QueuePaused {
        queue,
        paused: false,
    }))
}

/// Every concurrency key with its limit, running and waiting jobs.
#[utoipa::path(get, path = "/v1/concurrency-limits", tag = "queues",
    responses((status = 200, description = "Concurrency keys", body = [ConcurrencyKeyRow])))]
pub async fn limits(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ConcurrencyKeyRow>>> {
    Ok(Json(
        caller.inspector(&state).concurrency_limits(None).await?,
    ))
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimit {
    /// At most this many jobs of the key run at once (1 or more).
    pub limit: i64,
}

/// Set a concurrency key's limit (takes effect at once). Admin only.
#[utoipa::path(put, path = "/v1/concurrency-limits/{key}", tag = "queues",
    params(("key" = String, Path, description = "The concurrency key")),
    request_body = SetLimit,
    responses(
        (status = 200, description = "The key now", body = ConcurrencyKeyRow),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid key or limit", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    body: JsonBody<SetLimit>,
) -> ApiResult<Json<ConcurrencyKeyRow>> {
    caller.require_admin("setting a concurrency limit")?;
    Ok(Json(
        caller
            .inspector(&state)
            .set_concurrency_limit(&key, body.value.limit)
            .await?,
    ))
}

/// Remove a concurrency key's limit. Admin only.
#[utoipa::path(delete, path = "/v1/concurrency-limits/{key}", tag = "queues",
    params(("key" = String, Path, description = "The concurrency key")),
    responses(
        (status = 200, description = "The key now", body = ConcurrencyKeyRow),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn clear_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<ConcurrencyKeyRow>> {
    caller.require_admin("clearing a concurrency limit")?;
    Ok(Json(
        caller
            .inspector(&state)
            .clear_concurrency_limit(&key)
            .await?,
    ))
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkersQuery {
    /// Also workers stopped within this long (1h by default).
    pub recent: Option<String>,
    /// A worker silent this long counts as gone (30s by default).
    pub dead_after: Option<String>,
}

/// Live and recently stopped workers.
#[utoipa::path(get, path = "/v1/workers", tag = "workers", params(WorkersQuery),
    responses((status = 200, description = "Workers, newest first", body = [Worker])))]
pub async fn workers(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<WorkersQuery>,
) -> ApiResult<Json<Vec<Worker>>> {
    let recent = age("recent", query.recent, Duration::from_secs(3600))?;
    let dead_after = age("dead_after", query.dead_after, Duration::from_secs(30))?;
    Ok(Json(
        caller.inspector(&state).workers(recent, dead_after).await?,
    ))
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StuckQuery {
    /// How long a due job may wait, or a job run past its limit (5m by default).
    pub older_than: Option<String>,
    /// A worker silent this long counts as gone (30s by default).
    pub dead_after: Option<String>,
}

/// What needs an operator, each with the reason and the fix (`lc stuck`).
#[utoipa::path(get, path = "/v1/stuck", tag = "workers", params(StuckQuery),
    responses((status = 200, description = "Findings", body = [Finding])))]
pub async fn stuck(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<StuckQuery>,
) -> ApiResult<Json<Vec<Finding>>> {
    let defaults = StuckParams::default();
    let params = StuckParams {
        older_than: age("older_than", query.older_than, defaults.older_than)?,
        dead_after: age("dead_after", query.dead_after, defaults.dead_after)?,
    };
    let findings = state.deployments.stuck(&params).await?;
    if caller.admin {
        return Ok(Json(findings));
    }
    // Another owner's findings are not this caller's to see: only its own jobs'.
    let inspector = caller.inspector(&state);
    let mut own = Vec::new();
    for finding in findings {
        if let Some(id) = finding.job_id
            && inspector.job(id).await.is_ok()
        {
            own.push(finding);
        }
    }
    Ok(Json(own))
}
