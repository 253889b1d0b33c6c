//! The HTTP section's floor: what one `POST /v1/jobs` costs with no queue behind it.
//! The same framework as `lc serve` (axum served by axum_server on hyper, Tokio's
//! multi-threaded runtime), the same request (bearer token present, a JSON body read
//! into a struct that refuses unknown fields) and the same answer (201, a new job id,
//! `Location`), but no middleware, no token lookup and no database. The bench drives it with the same
//! client and concurrency as `lc serve`: the CPU per request of that client and this
//! server is what any HTTP API on this stack adds to an enqueue, however lean, so an
//! added cost below it cannot be reached here.
//!
//! `lc-bench-http-floor ADDR`: listens on ADDR (loopback) until killed.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

/// The fields of `lc serve`'s enqueue request that the bench sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be parsed, as lc serve reads it; not used further
struct EnqueueRequest {
    kind: String,
    queue: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
}

async fn enqueue(headers: HeaderMap, body: Bytes) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer "));
    if !bearer {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if serde_json::from_slice::<EnqueueRequest>(&body).is_err() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let id = uuid::Uuid::now_v7();
    let mut response = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"id":"{id}"}}"#),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: lc-bench-http-floor ADDR"))?
        .parse()?;
    anyhow::ensure!(addr.ip().is_loopback(), "listens on loopback only");
    let app = Router::new()
        .route("/v1/jobs", post(enqueue))
        .route("/readyz", axum::routing::get(|| async { "ready" }));
    // Served as lc serve serves: axum_server on hyper.
    axum_server::bind(addr)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
