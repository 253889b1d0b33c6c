//! Worker settings: flags with environment variables and defaults that suit
//! production; tests shrink the timings so crash drills finish in seconds.

use std::time::Duration;

use clap::Args;
use lc_shared::config::parse_duration;

#[derive(Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Jobs this process runs at once
    #[arg(long, env = "LC_CONCURRENCY", default_value_t = 10)]
    pub concurrency: usize,

    /// Queues to take jobs from, comma separated
    #[arg(
        long,
        env = "LC_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,

    /// How long a claimed job stays held without a heartbeat (keep it well above
    /// CockroachDB's 500ms maximum clock offset)
    #[arg(long, env = "LC_LEASE", value_parser = parse_duration, default_value = "30s")]
    pub lease: Duration,

    /// How often the worker extends its leases (one statement for all its jobs)
    #[arg(long, env = "LC_HEARTBEAT", value_parser = parse_duration, default_value = "5s")]
    pub heartbeat: Duration,

    /// How often the sweeper runs: expired leases, due delayed jobs, lost Redis data
    #[arg(long, env = "LC_SWEEP_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub sweep_interval: Duration,

    /// How often a busy worker also claims due jobs straight from the database, so a
    /// job whose hint was lost never waits behind a backlog forever
    #[arg(long, env = "LC_DB_POLL_INTERVAL", value_parser = parse_duration, default_value = "5s")]
    pub db_poll_interval: Duration,

    /// First retry delay; doubles each attempt, with jitter
    #[arg(long, env = "LC_BACKOFF_BASE", value_parser = parse_duration, default_value = "1s")]
    pub backoff_base: Duration,

    /// Longest retry delay
    #[arg(long, env = "LC_BACKOFF_MAX", value_parser = parse_duration, default_value = "10m")]
    pub backoff_max: Duration,

    /// On SIGTERM, how long running jobs may take to finish before they are stopped and
    /// handed back to the queue
    #[arg(long, env = "LC_GRACE", value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,

    /// Most hints taken from Redis in one pop
    #[arg(long, env = "LC_FETCH_BATCH", default_value_t = 100)]
    pub fetch_batch: usize,

    /// Do not ingest the Redis inbox stream in this process
    #[arg(long, env = "LC_NO_INBOX")]
    pub no_inbox: bool,

    /// Serve Prometheus metrics and the probes `/healthz` and `/readyz` on this address
    /// (for example 127.0.0.1:9187; port 0 takes a free one)
    #[arg(long, env = "LC_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Write the address the metrics server listens on to this file once it listens
    /// (with `--metrics-addr 127.0.0.1:0`, how a probe finds a replica's port when
    /// several replicas share the host's network)
    #[arg(long, env = "LC_METRICS_ADDR_FILE", requires = "metrics_addr")]
    pub metrics_addr_file: Option<std::path::PathBuf>,

    /// On SIGTERM or ctrl-c, drain: stop claiming and exit once the running jobs are
    /// done, however long they take (no `--grace` limit, nothing handed back). For
    /// rolling upgrades; a second signal exits at once
    #[arg(long, env = "LC_DRAIN")]
    pub drain: bool,

    /// Time limit of one attempt of a kind, KIND=DURATION (repeatable, or comma
    /// separated), for jobs that do not set their own; replaces the kind's built-in
    /// default (`lc-worker --help` of a binary lists its kinds' defaults)
    #[arg(long = "kind-timeout", env = "LC_KIND_TIMEOUTS", value_name = "KIND=DURATION",
          value_delimiter = ',', value_parser = parse_kind_timeout)]
    pub kind_timeouts: Vec<(String, Duration)>,

    #[command(flatten)]
    pub events: EventsConfig,
}

/// The event relay's settings (see `lc_shared::events`).
#[derive(Args, Clone, Debug)]
pub struct EventsConfig {
    /// Do not run the event relay in this process (another worker's relay publishes
    /// the events; while none runs, they wait in the database)
    #[arg(long, env = "LC_NO_EVENTS")]
    pub no_events: bool,

    /// About how many entries the event stream keeps (`XADD MAXLEN ~`); consumers
    /// further behind lose the oldest
    #[arg(long, env = "LC_EVENTS_MAXLEN", default_value_t = lc_shared::events::DEFAULT_STREAM_MAXLEN)]
    pub events_maxlen: usize,

    /// How often an idle relay looks for new events (a busy one goes on at once)
    #[arg(long, env = "LC_EVENTS_INTERVAL", value_parser = parse_duration, default_value = "100ms")]
    pub events_interval: Duration,

    /// Most events claimed, sent and marked in one transaction
    #[arg(long, env = "LC_EVENTS_BATCH", default_value_t = 1000)]
    pub events_batch: usize,
}

impl Default for EventsConfig {
    /// The flags' defaults.
    fn default() -> EventsConfig {
        EventsConfig {
            no_events: false,
            events_maxlen: lc_shared::events::DEFAULT_STREAM_MAXLEN,
            events_interval: Duration::from_millis(100),
            events_batch: 1000,
        }
    }
}

/// KIND=DURATION; whether the kind exists is checked against the worker's registry at
/// start.
fn parse_kind_timeout(text: &str) -> Result<(String, Duration), String> {
    let (kind, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KIND=DURATION, got {text:?}"))?;
    let kind = kind.trim().to_owned();
    let duration = parse_duration(duration)?;
    if duration.is_zero() {
        return Err(format!("the time limit of {kind} must be more than 0"));
    }
    Ok((kind, duration))
}

impl WorkerConfig {
    /// What to change for CockroachDB, whose nodes' clocks may be 500 ms apart: a lease
    /// of at least 5 s, and a heartbeat of at most a third of it, so that a lease is
    /// extended twice before clock offset could let another worker take it over.
    /// PostgreSQL (one clock) keeps short leases for drills.
    pub fn cockroachdb_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.lease < Duration::from_secs(5) {
            warnings.push(format!(
                "--lease {:?} is short for CockroachDB (500 ms maximum clock offset between nodes): use 5s or more",
                self.lease
            ));
        }
        if self.heartbeat * 3 > self.lease {
            warnings.push(format!(
                "--heartbeat {:?} is above a third of --lease {:?}: on CockroachDB a late heartbeat plus clock offset can lose the lease",
                self.heartbeat, self.lease
            ));
        }
        warnings
    }

    /// Checks settings that clap cannot, with messages that say what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.queues.is_empty() {
            return Err("--queues needs at least one queue".into());
        }
        for queue in &self.queues {
            lc_shared::job::validate_queue_name(queue).map_err(|err| err.to_string())?;
        }
        if self.heartbeat * 2 > self.lease {
            return Err(format!(
                "--heartbeat ({:?}) must be at most half of --lease ({:?}), or leases expire between heartbeats",
                self.heartbeat, self.lease
            ));
        }
        if self.events.events_batch == 0 || self.events.events_maxlen == 0 {
            return Err("--events-batch and --events-maxlen must be at least 1".into());
        }
        if self.lease < Duration::from_secs(1) {
            return Err(
                "--lease must be at least 1s (CockroachDB allows 500ms of clock offset)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerConfig;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: WorkerConfig,
    }

    fn config(args: &[&str]) -> WorkerConfig {
        Cli::parse_from(std::iter::once("lc-worker").chain(args.iter().copied())).config
    }

    #[test]
    fn the_event_relay_defaults_are_the_flags_defaults() {
        let parsed = config(&[]).events;
        let default = super::EventsConfig::default();
        assert_eq!(parsed.no_events, default.no_events);
        assert_eq!(parsed.events_maxlen, default.events_maxlen);
        assert_eq!(parsed.events_interval, default.events_interval);
        assert_eq!(parsed.events_batch, default.events_batch);
    }

    #[test]
    fn cockroachdb_wants_long_leases_and_frequent_heartbeats() {
        assert!(config(&[]).cockroachdb_warnings().is_empty());
        let short = config(&["--lease", "2s", "--heartbeat", "300ms"]);
        let warnings = short.cockroachdb_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--lease"));
        let slow = config(&["--lease", "6s", "--heartbeat", "3s"]);
        let warnings = slow.cockroachdb_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--heartbeat"));
    }
}
