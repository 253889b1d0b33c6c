//! Options every binary shares: where the database and Redis are. Flattened into each
//! CLI so that flags and environment variables are the same everywhere.

use clap::Args;

use crate::store::{IsolationSetting, Store};

/// Kept here too: the binaries' flags have always parsed durations through
/// `lc_shared::config::parse_duration`.
pub use crate::duration::parse_duration;

/// Where LaunchControl keeps its state.
#[derive(Args, Clone, Debug)]
pub struct ConnectOpts {
    /// PostgreSQL or CockroachDB connection URL (the source of truth)
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://lc@127.0.0.1:55432/launchcontrol",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Redis URL (dispatch hints and the inbox stream)
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:56379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Prefix of every Redis key, so several installations can share one Redis
    #[arg(long, env = "LC_REDIS_PREFIX", default_value = "lc")]
    pub redis_prefix: String,

    /// Database connections per process
    #[arg(long, env = "LC_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Transaction isolation: `read-committed` runs each single conditional statement
    /// (claim, heartbeat, complete, retry, expire, cancel) at read committed and
    /// whatever reads then decides at serializable or under row locks; `serializable`
    /// runs everything serializable, for databases without read committed
    #[arg(long, env = "LC_ISOLATION", value_enum, default_value_t = IsolationSetting::ReadCommitted)]
    pub isolation: IsolationSetting,
}

impl ConnectOpts {
    /// The store these options name (connections are opened lazily).
    pub fn store(&self, pool_size: usize) -> crate::store::Result<Store> {
        Ok(Store::connect(&self.database_url, pool_size)?.with_isolation(self.isolation))
    }
}

/// A URL with its password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact_url("postgres://lc:secret@127.0.0.1:5432/db"),
            "postgres://lc:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
