//! Tracing set-up shared by the binaries (`lc`, `lc serve`, `lc-worker`): logs with
//! `--log-format pretty|json`, level from `RUST_LOG` (default per binary), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, spans
//! exported over OTLP/HTTP ([`otlp`]) and carried across the queue with each job
//! ([`job_trace`]).

pub mod job_trace;
mod otlp;

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// How long [`Telemetry::shutdown`] waits for the last spans to reach the collector: a
/// collector that is down must not hold a stopping worker past its grace period.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// What [`init`] installed. Call [`Telemetry::shutdown`] before the process exits, while
/// the runtime that [`init`] ran in is still alive: spans still buffered go out then.
#[must_use = "call shutdown before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (waiting at most a few seconds) and stops the
    /// exporter. Blocks: call it outside async code, with the runtime still running
    /// (after `Runtime::block_on` returns, before the runtime is dropped).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            job_trace::disable();
            if let Err(err) = provider.shutdown_with_timeout(FLUSH_LIMIT) {
                eprintln!("warning: traces not all sent at exit: {err}");
            }
        }
    }
}

/// Installs the global subscriber; logs go to stderr so stdout stays for output.
/// `service` names the process in traces unless `OTEL_SERVICE_NAME` does. Trace export
/// needs a Tokio runtime (its HTTP client runs there): call this inside one (for example
/// under `Runtime::enter`); without one, traces stay off with a warning.
pub fn init(format: LogFormat, default_level: &str, service: &str) -> Telemetry {
    let filter = log_filter(default_level);
    let ansi = std::io::stderr().is_terminal();
    let exporter = match otlp::configured() {
        true => otlp::install(service),
        false => Ok(None),
    };
    let (provider, tracer) = match exporter {
        Ok(Some((provider, tracer))) => (provider, tracer),
        Ok(None) => {
            init_logs_only(format, filter, ansi);
            return Telemetry { provider: None };
        }
        Err(reason) => {
            init_logs_only(format, filter, ansi);
            tracing::warn!(%reason, "trace export is off");
            return Telemetry { provider: None };
        }
    };
    // Logs keep their own filter (RUST_LOG or the binary's default); the trace layer
    // takes every span from info up, whatever the log level, and warnings and errors
    // as span events.
    let logs = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
    };
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            let level = *metadata.level();
            if metadata.is_span() {
                level <= tracing::Level::INFO
            } else {
                level <= tracing::Level::WARN
            }
        }));
    let installed = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    if installed.is_err() {
        // A second init (tests): keep the first subscriber, and no exporter of ours.
        let _ = provider.shutdown();
        return Telemetry { provider: None };
    }
    job_trace::enable(tracer);
    Telemetry {
        provider: Some(provider),
    }
}

/// `RUST_LOG`, else `default_level`; the pool's per-connection warnings are muted.
fn log_filter(default_level: &str) -> EnvFilter {
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
    filter
}

/// The subscriber without traces, exactly as before tracing existed: one global filter,
/// so spans below the log level cost nothing.
fn init_logs_only(format: LogFormat, filter: EnvFilter, ansi: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
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
