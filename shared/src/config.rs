//! Options every binary shares: where the database and Redis are. Flattened into each
//! CLI so that flags and environment variables are the same everywhere.

use clap::Args;

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
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
