//! Tracing set-up shared by the binaries: `--log-format pretty|json`, level from
//! `RUST_LOG` (default `info`).

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Installs the global subscriber; logs go to stderr so stdout stays for output.
pub fn init(format: LogFormat, default_level: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // The pool warns once per dropped connection ("Connection could not be recycled",
    // "Connection error"): hundreds of lines in one database outage, which the
    // component that needed the database already reports once. Kept unless RUST_LOG
    // names the pool.
    let pool_named = std::env::var("RUST_LOG").is_ok_and(|value| value.contains("deadpool"));
    if !pool_named && let Ok(directive) = "deadpool.postgres=error".parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
