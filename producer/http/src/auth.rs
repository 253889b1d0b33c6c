//! Who is calling: the bearer token of every `/v1` request, looked up by its hash
//! (`lc_producer::tokens`), and its rate limit. A handler takes a [`Caller`], which
//! hands out the read and write APIs scoped to the caller's owner (everything for an
//! admin). The token itself is never logged nor repeated in an answer; the rate
//! limit is `limits`'s.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use lc_deployment::Deployments;
use lc_producer::Inspector;

/// The caller of a request: a usable token's owner, and whether it is an admin.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: String,
    pub admin: bool,
}

impl Caller {
    /// The read API, scoped to the caller's jobs unless the caller is an admin.
    pub fn inspector(&self, state: &AppState) -> Inspector {
        let inspector = state.deployments.inspector();
        if self.admin {
            inspector
        } else {
            inspector.for_owner(&self.owner)
        }
    }

    /// The deployments API, scoped to the caller's deployments unless an admin.
    pub fn deployments(&self, state: &AppState) -> Deployments {
        if self.admin {
            state.deployments.clone()
        } else {
            state.deployments.clone().for_owner(&self.owner)
        }
    }

    /// Refuses a caller who is not an admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} needs an admin token (lc tokens create --owner NAME --admin)"
            )))
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if the header has that form.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "missing token: send `Authorization: Bearer <token>` (lc tokens create makes one)",
            ));
        };
        let caller =
            state.tokens.authenticate(token).await?.ok_or_else(|| {
                ApiError::unauthorized("invalid token: unknown, revoked or expired")
            })?;
        state.rate_limits.check(caller.token_id)?;
        let span = tracing::Span::current();
        span.record("owner", caller.owner.as_str());
        span.record("token_id", tracing::field::display(caller.token_id));
        Ok(Caller {
            owner: caller.owner,
            admin: caller.admin,
        })
    }
}
