//! The `Idempotency-Key` header of the POSTs that create something. The first request
//! with a key records the SHA-256 of its body (per owner, `lc_producer::tokens`); the
//! same key with the same body is answered as the first was, and with another body is
//! refused (422). What was made is made once by the core's own guards: a job's
//! idempotency key (derived from this key, in the owner's space), a deployment's
//! unique live name.

use axum::http::HeaderMap;
use utoipa::IntoParams;

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that repeats an earlier one.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted.
const MAX_LEN: usize = 128;

/// The header, for the OpenAPI document.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// Makes a retried request safe: the same key with the same body is answered as
    /// the first was (nothing new is made); with another body it is refused (422).
    /// 1 to 128 printable ASCII characters.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// The request's key, if it sent one; a malformed one is refused.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().ok().filter(|text| {
        !text.is_empty() && text.len() <= MAX_LEN && text.bytes().all(|b| b.is_ascii_graphic())
    });
    match text {
        Some(text) => Ok(Some(text.to_owned())),
        None => Err(ApiError::bad_request(format!(
            "invalid Idempotency-Key: use 1 to {MAX_LEN} printable ASCII characters without spaces"
        ))),
    }
}

/// The refusal of a key used before with another request.
pub fn reused(key: &str) -> ApiError {
    ApiError::invalid(format!(
        "Idempotency-Key {key:?} was used before with another request; use a new key for a new request"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_are_short_printable_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(key(&headers).expect("no key is fine"), None);
        headers.insert(HEADER, HeaderValue::from_static("order-42"));
        assert_eq!(key(&headers).expect("valid"), Some("order-42".to_owned()));
        for bad in ["", "has space", &"k".repeat(129)] {
            headers.insert(HEADER, HeaderValue::from_str(bad).expect("a header value"));
            assert!(key(&headers).is_err(), "{bad:?}");
        }
    }
}
