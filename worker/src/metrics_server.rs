//! The worker's HTTP port (`--metrics-addr`): `GET /metrics` in Prometheus text format,
//! and the probes an orchestrator asks: `/healthz` (liveness: the heartbeat loop turns)
//! and `/readyz` (readiness: the database and Redis answer, and the worker still takes
//! jobs). Served by axum until the worker stops, so the probes answer while it drains.
//! What is counted lives in the `metrics` module; the scrape adds what only the
//! database knows (queue depths, oldest due job) and this worker's running jobs. The
//! probes answer like `lc serve`'s: `{"status":"ok"}`, or 503 with what is wrong.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lc_shared::store::error_chain;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::{CONTENT_TYPE, Readings};
use crate::worker::Worker;

/// How long `/readyz` waits for the database or Redis: a probe that hangs on a
/// black-holed connection tells the orchestrator nothing.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share: the worker, and the token cancelled when it stops claiming.
#[derive(Clone)]
struct Probed {
    worker: Arc<Worker>,
    claiming_stopped: CancellationToken,
}

async fn metrics(State(probed): State<Probed>) -> impl IntoResponse {
    let worker = &probed.worker;
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

/// `{"status": ...}` with a `detail` when something is wrong.
fn status(code: StatusCode, status: &str, detail: Option<String>) -> Response {
    let mut body = serde_json::json!({ "status": status });
    if let Some(detail) = detail {
        body["detail"] = serde_json::Value::String(detail);
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Liveness: the heartbeat loop came round within one lease. Past that, the leases it
/// should have extended have lapsed: restarting the process is the cure.
async fn healthz(State(probed): State<Probed>) -> Response {
    let since = probed.worker.pulse.since_last();
    let lease = probed.worker.config.lease;
    if since <= lease {
        status(StatusCode::OK, "ok", None)
    } else {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            "stuck",
            Some(format!(
                "the heartbeat loop last came round {}ms ago, more than a lease ({}ms)",
                since.as_millis(),
                lease.as_millis()
            )),
        )
    }
}

/// Readiness: the worker takes jobs, and the database and Redis answer within
/// [`READY_TIMEOUT`]. A draining or stopping worker is alive but not ready.
async fn readyz(State(probed): State<Probed>) -> Response {
    if probed.claiming_stopped.is_cancelled() {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            Some("the worker no longer claims jobs; it finishes the ones it runs".to_owned()),
        );
    }
    let worker = &probed.worker;
    let database = tokio::time::timeout(READY_TIMEOUT, worker.store.ping()).await;
    let redis = tokio::time::timeout(READY_TIMEOUT, worker.queue.ping()).await;
    let mut wrong = Vec::new();
    match database {
        Ok(Ok(())) => {}
        Ok(Err(err)) => wrong.push(format!("database: {}", error_chain(&err))),
        Err(_) => wrong.push(format!("database: no answer within {READY_TIMEOUT:?}")),
    }
    match redis {
        Ok(Ok(())) => {}
        Ok(Err(err)) => wrong.push(format!("redis: {}", error_chain(&err))),
        Err(_) => wrong.push(format!("redis: no answer within {READY_TIMEOUT:?}")),
    }
    if wrong.is_empty() {
        status(StatusCode::OK, "ok", None)
    } else {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Some(wrong.join("; ")),
        )
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "try GET /metrics, /healthz or /readyz\n",
    )
}

/// Serves the metrics and the probes until `stop`; `/readyz` says "stopping" once
/// `claiming_stopped` is cancelled.
pub(crate) async fn serve(
    worker: Arc<Worker>,
    listener: TcpListener,
    claiming_stopped: CancellationToken,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(Probed {
            worker,
            claiming_stopped,
        });
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        warn!(error = %err, "the metrics server stopped");
    }
}
