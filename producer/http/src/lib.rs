//! LaunchControl's HTTP API, served by `lc serve`: jobs, queues, workers, stuck items,
//! deployments and their events for upstream services and the dashboard, with tokens
//! and owners. Every handler is a thin mapping onto the library's public API
//! (`lc_producer::Inspector`, `Producer`, `lc_deployment::Deployments`); no handler
//! holds SQL or decides a state.
//!
//! - `config`: `lc serve`'s options
//! - `auth`: bearer tokens, owners, the per-token rate limit
//! - `jobs`, `ops`, `deployments`, `events`, `system`: the routes
//! - `body`, `idempotency`, `error`: request bodies, `Idempotency-Key`, problems
//! - `middleware`, `metrics`: request ids, the log line, metrics
//! - `dashboard`: what `/` serves, and the throughput series and charts it shows

mod auth;
mod body;
pub mod config;
mod dashboard;
mod deployments;
pub mod error;
mod events;
mod idempotency;
mod jobs;
mod limits;
mod metrics;
mod middleware;
mod ops;
mod state;
mod system;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum_server::Handle;
use lc_deployment::Deployments;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::ServeArgs;
pub use state::AppState;

use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LaunchControl",
        description = "Jobs, queues, workers and deployments of a LaunchControl installation. \
                       Authenticate with `Authorization: Bearer <token>` (`lc tokens create`). \
                       Errors are RFC 9457 problems (application/problem+json)."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::Problem)),
    tags(
        (name = "jobs", description = "Enqueue, list, inspect, cancel, retry and requeue jobs"),
        (name = "queues", description = "Queue depths; pause, resume, concurrency limits"),
        (name = "workers", description = "Workers and what needs an operator"),
        (name = "deployments", description = "Machines and containers: create, update, tear down"),
        (name = "events", description = "Job and deployment state changes as server-sent events"),
        (name = "system", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("lc_<43 characters>")
                    .build(),
            ),
        );
    }
}

/// Every operation may answer a problem with a status its own list does not name: a
/// request the layers refuse before the handler (400 for a malformed path or query,
/// 401, 405, 413, 415, 429), or a service that is down (503). The document says so
/// with a `default` problem response on each.
struct Problems;

impl utoipa::Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = ResponseBuilder::new()
            .description("A problem (RFC 9457): type, title, status, detail")
            .content(
                error::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| problem.clone().into());
            }
        }
    }
}

/// The API's routes and their OpenAPI document, from the same handlers.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue, jobs::list))
        .routes(routes!(jobs::enqueue_batch))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::requeue))
        .routes(routes!(ops::queues))
        .routes(routes!(ops::pause))
        .routes(routes!(ops::resume))
        .routes(routes!(ops::limits))
        .routes(routes!(ops::set_limit, ops::clear_limit))
        .routes(routes!(ops::workers))
        .routes(routes!(ops::stuck))
        .routes(routes!(deployments::create, deployments::list))
        .routes(routes!(
            deployments::show,
            deployments::update,
            deployments::teardown
        ))
        .routes(routes!(deployments::ack))
        .routes(routes!(deployments::extend))
        .routes(routes!(events::follow))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .merge(dashboard::api())
        .split_for_parts();
    // After the routes: the paths are there now.
    utoipa::Modify::modify(&Problems, &mut document);
    (router, document)
}

/// The OpenAPI document (what `/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

/// The whole application: the API, `/openapi.json`, the dashboard, and the layers
/// every request goes through.
pub fn app(state: AppState, max_body: usize) -> Router {
    let (api, document) = api();
    let document = Arc::new(document);
    api.route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { axum::Json(document.as_ref().clone()) }
        }),
    )
    .merge(dashboard::routes())
    .fallback(|| async { ApiError::not_found("no such route; /openapi.json lists them") })
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        middleware::observe,
    ))
    .layer(DefaultBodyLimit::max(max_body))
    .with_state(state)
}

/// Serves until `shutdown` is cancelled (then lets requests in flight finish, for up
/// to `--shutdown-grace`). `on_listening` learns the bound address (the port of
/// `--listen 127.0.0.1:0`).
pub async fn serve(
    args: ServeArgs,
    deployments: Deployments,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(std::net::SocketAddr, bool) + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState {
        tokens: deployments.producer().tokens(),
        deployments,
        rate_limits: limits::RateLimits::new(args.rate_limit.0),
        metrics: Arc::new(metrics::Metrics::new()),
        shutdown: shutdown.clone(),
    };
    tokio::spawn(idempotency::prune_keys(
        state.tokens.clone(),
        args.idempotency_ttl,
        shutdown.clone(),
    ));
    let app = app(state, args.max_body).into_make_service();
    let handle: Handle<std::net::SocketAddr> = Handle::new();
    let tls = args.tls_cert.is_some();
    {
        let handle = handle.clone();
        let grace = args.shutdown_grace;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Some(address) = handle.listening().await {
                on_listening(address, tls);
            }
            shutdown.cancelled().await;
            tracing::info!(grace = ?grace, "shutting down: finishing requests in flight");
            handle.graceful_shutdown(Some(grace));
        });
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            // One process-wide crypto provider: ring, as the rest of the workspace uses.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|err| {
                    anyhow::anyhow!(
                        "cannot use --tls-cert {} / --tls-key {}: {err}",
                        cert.display(),
                        key.display()
                    )
                })?;
            axum_server::bind_rustls(args.listen, config)
                .handle(handle)
                .serve(app)
                .await?;
        }
        _ => {
            axum_server::bind(args.listen)
                .handle(handle)
                .serve(app)
                .await?;
        }
    }
    Ok(())
}
