//! What `/` serves. A placeholder page that points to the API's document until the
//! dashboard's assets (embedded in the binary, no build step) are served here.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LaunchControl</title></head>
<body><h1>LaunchControl</h1>
<p>The HTTP API is described in <a href="/openapi.json">/openapi.json</a>.</p>
</body></html>
"#;

/// The routes of the dashboard (`/` and its assets).
pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(INDEX) }))
}
