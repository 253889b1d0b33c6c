//! What the server says about itself: `/healthz` (the process answers), `/readyz`
//! (the database and Redis answer), `/metrics` (Prometheus), `/openapi.json`. None
//! needs a token: they say nothing about jobs or deployments.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
}

fn ok() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    ok()
}

/// The database and Redis answer: the server can serve requests.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database or Redis does not answer", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    state
        .deployments
        .inspector()
        .ping()
        .await
        .map_err(ApiError::from)?;
    Ok(ok())
}

/// Request counts and durations (Prometheus text format).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}
