//! `lc serve`'s options: where to listen, TLS, and the limits every request meets.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Serve the HTTP API (and the dashboard at `/`).
#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Callers authenticate with a token (`Authorization: Bearer lc_...`) made by
`lc tokens create --owner NAME [--admin] [--expires 90d]`. A token sees and changes only
its owner's jobs and deployments; an admin token sees everything and may pause queues
and set concurrency limits.

Routes: /v1/jobs, /v1/queues, /v1/workers, /v1/stuck, /v1/deployments, /v1/events
(server-sent events), /openapi.json (the full document), /healthz, /readyz, /metrics.

Examples:
  lc serve                                         # http://127.0.0.1:8080
  lc serve --listen 127.0.0.1:9000 --rate-limit 20/s
  lc serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8080/v1/jobs"
)]
pub struct ServeArgs {
    /// Address and port to listen on. Loopback by default: put a TLS-terminating proxy
    /// in front, or give --tls-cert/--tls-key, before listening on other interfaces
    #[arg(long, env = "LC_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PEM certificate chain: serve HTTPS (with --tls-key)
    #[arg(long, env = "LC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, env = "LC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Largest request body accepted (bytes, or with KiB/MiB); larger ones get 413
    #[arg(long, env = "LC_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    pub max_body: usize,

    /// Requests per token: N/s or N/m (bursts up to N); over it, 429 with Retry-After.
    /// `off` for no limit
    #[arg(long, env = "LC_RATE_LIMIT", default_value = "100/s", value_parser = parse_rate)]
    pub rate_limit: RateLimit,

    /// How long shutdown (SIGTERM, Ctrl-C) waits for requests in flight; event
    /// streams are ended at once
    #[arg(long, env = "LC_SHUTDOWN_GRACE", default_value = "10s", value_parser = lc_shared::config::parse_duration)]
    pub shutdown_grace: Duration,

    /// How long an `Idempotency-Key` is held to the request it first came with (24
    /// hours by default, as Stripe does): within it, the same key with another body is
    /// refused (422). Older keys are pruned in the background; a job made with a key
    /// still answers a repeat of it while the job exists
    #[arg(long, env = "LC_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub idempotency_ttl: Duration,
}

/// `--idempotency-ttl`: a duration of at least a second.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = lc_shared::config::parse_duration(text)?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(ttl)
}

/// `--rate-limit`: a rate, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit(pub Option<Rate>);

/// A rate: `count` requests per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

/// `100/s`, `600/m`, `off`.
pub fn parse_rate(text: &str) -> Result<RateLimit, String> {
    if text == "off" {
        return Ok(RateLimit(None));
    }
    let invalid = || format!("invalid rate {text:?}: expected N/s, N/m or off");
    let (count, unit) = text.split_once('/').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    let count = NonZeroU32::new(count).ok_or_else(invalid)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return Err(invalid()),
    };
    Ok(RateLimit(Some(Rate { count, per })))
}

/// `1048576`, `512KiB`, `1MiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let invalid = || format!("invalid size {text:?}: expected bytes, or a number with KiB or MiB");
    let (digits, factor) = if let Some(number) = text.strip_suffix("MiB") {
        (number, 1024 * 1024)
    } else if let Some(number) = text.strip_suffix("KiB") {
        (number, 1024)
    } else {
        (text, 1)
    };
    let number: usize = digits.trim().parse().map_err(|_| invalid())?;
    match number.checked_mul(factor) {
        Some(size) if size > 0 => Ok(size),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes_parse() {
        let rate = parse_rate("100/s").expect("valid").0.expect("a rate");
        assert_eq!((rate.count.get(), rate.per), (100, Duration::from_secs(1)));
        assert_eq!(parse_rate("off"), Ok(RateLimit(None)));
        for bad in ["", "0/s", "10", "10/h", "x/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("300"), Ok(300));
        for bad in ["", "0", "1GB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
