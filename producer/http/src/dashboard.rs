//! The operators' dashboard at `/`: plain HTML, CSS and JavaScript modules embedded in
//! the binary (no build step, nothing from another origin), which read and act through
//! the same `/v1` API as every client, with an admin token the operator types once
//! (kept in the tab's session storage, sent only in the `Authorization` header).
//! Every page answer carries a Content-Security-Policy that allows only this origin.
//!
//! - `chart`: a queue's throughput and failures as a server-drawn SVG
//! - `throughput`: the routes of the series and their charts

mod chart;
pub mod throughput;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// Only this origin, for everything: scripts, styles, API calls; images also from the
/// `blob:` URLs of the charts the page fetched with its token. No inline script or
/// style, no frames, no plugins, no form posts elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// An embedded file: its name under `/assets/`, media type and content.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $media:expr) => {
        Asset {
            name: $name,
            media_type: $media,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("live.js", JS),
    asset!("queues.js", JS),
    asset!("workers.js", JS),
    asset!("jobs.js", JS),
    asset!("deployments.js", JS),
    asset!("stuck.js", JS),
];

const INDEX: &str = include_str!("../assets/index.html");

/// An answer of the dashboard with its security headers.
fn page(media_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Always the assets of the binary that answers: no stale page after an upgrade.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => page(asset.media_type, asset.body),
        None => ApiError::not_found(format!("no dashboard asset {name:?}")).into_response(),
    }
}

/// The routes of the dashboard's page and assets (no token: they hold no data).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

/// The API routes the dashboard added: throughput series and their charts.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(throughput::series))
        .routes(routes!(throughput::chart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_assets_of_this_origin() {
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
        // Every script and stylesheet the page or a module names is embedded.
        let texts = std::iter::once(INDEX).chain(ASSETS.iter().map(|asset| asset.body));
        for text in texts {
            for quoted in text.split(['"', '\'']) {
                let Some(name) = quoted
                    .strip_prefix("/assets/")
                    .or_else(|| quoted.strip_prefix("./"))
                else {
                    continue;
                };
                if name.ends_with(".js") || name.ends_with(".css") || name.ends_with(".svg") {
                    assert!(
                        ASSETS.iter().any(|asset| asset.name == name),
                        "{name} is not embedded"
                    );
                }
            }
            assert!(!text.contains("http://") || text.contains("http://www.w3.org/2000/svg"));
            assert!(!text.contains("https://"), "a remote origin in an asset");
        }
    }
}
