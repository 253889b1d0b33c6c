//! The `Idempotency-Key` header of the POSTs that create something. The first request
//! with a key records the SHA-256 of its body (per owner, `lc_producer::tokens`); the
//! same key with the same body is answered as the first was, and with another body is
//! refused (422). What was made is made once by the core's own guards: a job's
//! idempotency key (derived from this key, in the owner's space), a deployment's
//! unique live name.

use std::time::Duration;

use axum::http::HeaderMap;
use lc_producer::Tokens;
use tokio_util::sync::CancellationToken;
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

/// Prunes the keys older than `ttl` until `shutdown`: at start, then every tenth of
/// the TTL (at least a second, at most 10 minutes). Several servers may prune at once;
/// each batch is one short `DELETE`.
pub async fn prune_keys(tokens: Tokens, ttl: Duration, shutdown: CancellationToken) {
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match tokens.prune_idempotency_keys(ttl).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned idempotency keys past --idempotency-ttl"),
            Err(err) => tracing::warn!(error = %lc_shared::store::error_chain(&err),
                                       "could not prune idempotency keys; will try again"),
        }
    }
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
