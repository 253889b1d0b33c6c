//! The per-token rate limit (`--rate-limit`), kept in this process's memory: a token
//! over its rate gets 429 with `Retry-After`.

use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::config::Rate;
use crate::error::ApiError;

/// Requests per token over time, in memory of this process.
#[derive(Clone)]
pub struct RateLimits {
    limiter: Option<Arc<DefaultKeyedRateLimiter<Uuid>>>,
}

impl RateLimits {
    pub fn new(rate: Option<Rate>) -> RateLimits {
        let limiter = rate.map(|rate| {
            // `count` requests per `per`, refilled evenly, in bursts of up to `count`.
            let period = rate.per / rate.count.get();
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(rate.count))
                .allow_burst(rate.count);
            Arc::new(RateLimiter::keyed(quota))
        });
        RateLimits { limiter }
    }

    /// Takes one request of `token`'s allowance; refused with the seconds to wait.
    pub fn check(&self, token: Uuid) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&token).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::too_many_requests(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}
