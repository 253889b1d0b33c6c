//! What every handler shares: the library's APIs, the token store, the limits and the
//! metrics.

use std::sync::Arc;

use lc_deployment::Deployments;
use lc_producer::Tokens;
use tokio_util::sync::CancellationToken;

use crate::limits::RateLimits;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    /// Unscoped; handlers go through [`crate::auth::Caller`] for scoped ones.
    pub deployments: Deployments,
    pub tokens: Tokens,
    pub rate_limits: RateLimits,
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: event streams end.
    pub shutdown: CancellationToken,
}
