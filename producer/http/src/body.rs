//! Request bodies: JSON (or a deployment spec in YAML) read as bytes, so that every
//! refusal is a problem in our words: a missing or wrong content type is 415, a body
//! over `--max-body` 413, malformed JSON, a wrong type or an unknown field 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body of type `T` (whose fields are `deny_unknown_fields`), with the
/// bytes it came as (the hash of an `Idempotency-Key` is over them).
pub struct JsonBody<T> {
    pub value: T,
    pub bytes: Bytes,
}

/// The media type of a request, lowercased, without parameters.
pub fn media_type(request: &Request) -> Option<String> {
    let value = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether a media type is JSON (`application/json`, `application/*+json`).
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// The body's bytes, or the 413 of a body over the limit.
pub async fn read_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "payload-too-large",
                    "request body over the server's limit (lc serve --max-body)",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })
}

/// Reads JSON into `T`: the words of serde's error say which field and why.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}

pub fn unsupported_media_type(expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        format!("expected a body of Content-Type {expected}"),
    )
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !media_type(&request).is_some_and(|media| is_json(&media)) {
            return Err(unsupported_media_type("application/json"));
        }
        let bytes = read_bytes(request, state).await?;
        Ok(JsonBody {
            value: parse_json(&bytes)?,
            bytes,
        })
    }
}
