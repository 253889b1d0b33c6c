//! Every error on the wire is an RFC 9457 problem (`application/problem+json`): a
//! `type` naming the kind of problem, a `title` (its short name), the `status`, and a
//! `detail` in the words of the `lc` command. Handlers return [`ApiError`]; the
//! library's errors map onto it by their [`ErrorKind`]; axum's own refusals (a body
//! that is not JSON, a wrong method, an unknown route, a body over the limit) are
//! rewritten into problems by [`problem_for_plain_errors`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lc_deployment::DeploymentError;
use lc_producer::tokens::TokenError;
use lc_producer::{ErrorKind, InspectError, ProducerError};
use lc_shared::store::error_chain;
use serde::Serialize;

/// The media type of problems.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem as it goes on the wire.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Names the kind of problem (`urn:lc:problem:not-found`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind of problem in a few words.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request, in the words of the `lc` command.
    pub detail: String,
}

/// An error a handler answers with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The last part of the problem type (`not-found`).
    pub slug: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            slug,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Malformed input: not JSON, a wrong type, an unknown field.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// Well-formed input that the library refused (an invalid job, spec or name).
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn too_many_requests(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("this token's rate limit is used up; try again in {retry_after}s"),
            )
        }
    }

    /// An error of the library, by its kind. Internal errors are logged with their
    /// causes and answered without them (they may name tables or hosts).
    fn of_kind(kind: ErrorKind, err: &(dyn std::error::Error + 'static)) -> ApiError {
        match kind {
            ErrorKind::NotFound => ApiError::not_found(err.to_string()),
            ErrorKind::Conflict => ApiError::conflict(err.to_string()),
            ErrorKind::Invalid => ApiError::invalid(err.to_string()),
            ErrorKind::Unavailable => {
                tracing::warn!(error = %error_chain(err), "a service the request needs is unavailable");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("{}; try again later", error_chain(err)),
                    )
                }
            }
            ErrorKind::Internal => {
                tracing::error!(error = %error_chain(err), "request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server's log has the details (search it for this response's x-request-id)",
                )
            }
        }
    }

    pub fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl From<InspectError> for ApiError {
    fn from(err: InspectError) -> Self {
        ApiError::of_kind(err.kind(), &err)
    }
}

impl From<ProducerError> for ApiError {
    fn from(err: ProducerError) -> Self {
        ApiError::of_kind(err.kind(), &err)
    }
}

impl From<DeploymentError> for ApiError {
    fn from(err: DeploymentError) -> Self {
        ApiError::of_kind(err.kind(), &err)
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        ApiError::of_kind(err.kind(), &err)
    }
}

/// A problem response.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    retry_after: Option<u64>,
) -> Response {
    let problem = Problem {
        kind: format!("urn:lc:problem:{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lc\""),
        );
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(self.status, self.slug, self.detail, self.retry_after)
    }
}

/// The problem slug of an error status that a layer below the handlers answered.
fn slug_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::BAD_REQUEST => "bad-request",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// Rewrites an error answered by axum or a tower layer (plain text or empty) into a
/// problem, keeping its status, its headers (`Allow` of a 405) and its words.
pub async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => "no such route; /openapi.json lists them".to_owned(),
        (StatusCode::METHOD_NOT_ALLOWED, true) => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if allowed.is_empty() {
                "method not allowed on this route; /openapi.json lists its methods".to_owned()
            } else {
                format!("method not allowed on this route (allowed: {allowed})")
            }
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "request body over the server's limit (lc serve --max-body)".to_owned()
        }
        (_, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
        (_, false) => text,
    };
    let mut rewritten = problem_response(status, slug_of(status), detail, None);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}
