//! The metrics endpoint: `GET /metrics` in Prometheus text format, served by axum
//! until the worker stops. What is counted lives in the `metrics` module; the scrape adds
//! what only the database knows (queue depths, oldest due job) and this worker's
//! running jobs.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::{CONTENT_TYPE, Readings};
use crate::worker::Worker;

async fn metrics(State(worker): State<Arc<Worker>>) -> impl IntoResponse {
    let readings = Readings {
        depths: worker.store.job_counts().await.ok(),
        ages: worker.store.oldest_due_ages().await.ok(),
        running: worker.running.len(),
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        worker.metrics.render(readings),
    )
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "try GET /metrics\n")
}

/// Serves `GET /metrics` until `stop`.
pub(crate) async fn serve(worker: Arc<Worker>, listener: TcpListener, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(worker);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %err, "the metrics server stopped");
    }
}
