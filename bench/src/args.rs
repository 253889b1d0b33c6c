//! The command line of `lc-bench`: every option and its default, and the sections.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use lc_shared::config::{ConnectOpts, parse_duration};

use crate::peer::PeerKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub(crate) enum Section {
    Single,
    Bulk,
    Drain,
    Latency,
    Fanout,
    Recovery,
    Fleet,
    Http,
}

impl Section {
    /// Whether `--repeat` repeats it: the sections that measure rates and latencies
    /// (the others make deployments and kill workers, once is their test).
    pub(crate) fn repeats(self) -> bool {
        matches!(
            self,
            Section::Single | Section::Bulk | Section::Drain | Section::Latency
        )
    }
}

/// Benchmarks LaunchControl, alone or beside BullMQ (`--compare bullmq`); run it through
/// scripts/bench.sh, which provides a fresh database and Redis prefix.
#[derive(Parser, Debug)]
#[command(name = "lc-bench", version, about, long_about = None)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) connect: ConnectOpts,

    /// Where `lc` and `lc-bench-worker` are (default: next to this binary)
    #[arg(long, env = "LC_BIN_DIR")]
    pub(crate) bin_dir: Option<PathBuf>,

    /// Directory for worker logs and machine stores (default: a fresh one under .lc/bench)
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,

    /// Jobs per enqueue measurement; the one-at-a-time runs of many producers take
    /// this many per producer, at most 8 times this many
    #[arg(long, default_value_t = 20_000)]
    pub(crate) jobs: usize,

    /// Jobs of each drain: enough that a drain lasts at least 5 s on a small machine
    /// (the report notes a measured drain shorter than that; BullMQ drained 100,000 in
    /// 4.6–5.0 s here)
    #[arg(long, default_value_t = 150_000)]
    pub(crate) drain_jobs: usize,

    /// Producer tasks of the one-at-a-time enqueue, each enqueueing one job at a time
    /// through one shared `Producer` (comma separated: each setting is a row)
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub(crate) single_concurrency: Vec<usize>,

    /// The pgbench of the one-producer reference (default: the newest
    /// /usr/lib/postgresql/*/bin/pgbench, else the PATH's)
    #[arg(long, env = "LC_PGBENCH")]
    pub(crate) pgbench: Option<PathBuf>,

    /// Jobs per `enqueue_batch` call
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch_size: usize,

    /// Concurrent batch tasks of the bulk enqueue (comma separated)
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub(crate) bulk_concurrency: Vec<usize>,

    /// Worker processes of each drain (comma separated: each setting is a row)
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub(crate) drain_workers: Vec<usize>,

    /// Leave out the floors run after each drain (lc's statements alone, the bare
    /// updates, the least outbox): the drain alone, to profile the worker without the
    /// floors' statements in the server's counters
    #[arg(long)]
    pub(crate) no_floors: bool,

    /// Runtime threads of the bench's own process (its producers, its HTTP client):
    /// one, as pgbench's `-j 1` and Node have. Measured on 2 cores with one producer:
    /// 2.0 context switches per job and 99% of the pgbench reference with one thread,
    /// 3.5–3.7 and 82–90% with two (the threads waking each other around each commit)
    #[arg(long, default_value_t = 1)]
    pub(crate) client_threads: usize,

    /// `--concurrency` of each drain and latency worker process
    #[arg(long, default_value_t = 50)]
    pub(crate) worker_concurrency: usize,

    /// Jobs per second of the latency producer (comma separated: each rate is a row)
    #[arg(
        long,
        alias = "latency-rate",
        value_delimiter = ',',
        default_value = "500,2000"
    )]
    pub(crate) latency_rates: Vec<u64>,

    /// How long the latency producer runs (measured)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub(crate) latency_duration: Duration,

    /// How long the latency producer runs at the same rate before that, unmeasured (new
    /// connections, first statements; the peer gets the same)
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub(crate) latency_warmup: Duration,

    /// Machines of the fan-out deployment
    #[arg(long, default_value_t = 10)]
    pub(crate) fanout_machines: usize,

    /// How long the stand-in's `create` takes
    #[arg(long, default_value_t = 2000)]
    pub(crate) fanout_create_delay_ms: u64,

    /// Nodes of the fleet section's deployments, one after the other
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    pub(crate) fleet_nodes: Vec<usize>,

    /// The fleet's provider limit L: docker-machine creates and removals of its account
    /// that may run at once (`lc queues limit machine:none L`)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) fleet_limit: u32,

    /// How long the stand-in's `create` takes in the fleet section
    #[arg(long, default_value_t = 2000)]
    pub(crate) fleet_create_delay_ms: u64,

    /// The docker-machine stand-in (default: tests/docker-machine/docker-machine)
    #[arg(long)]
    pub(crate) docker_machine: Option<PathBuf>,

    /// `sleep` jobs held by the worker that is SIGKILLed
    #[arg(long, default_value_t = 100)]
    pub(crate) recovery_jobs: usize,

    /// Run only these sections (comma separated); default all
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) only: Vec<Section>,

    /// Run each measuring section (single, bulk, drain, latency) this many times, one
    /// repetition after the other (lc then the peer within each), and report medians
    /// with their ranges; the other sections run once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) repeat: u32,

    /// Skip these sections (comma separated)
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) skip: Vec<Section>,

    /// RUST_LOG of the worker processes (their logs go to the work directory)
    #[arg(long, default_value = "warn")]
    pub(crate) worker_log: String,

    /// Profiling aid: log every statement of the bench database's new sessions, with its
    /// duration, to the PostgreSQL server log (ALTER DATABASE ... SET
    /// log_min_duration_statement = 0); costs some speed, so not for a measuring run
    #[arg(long)]
    pub(crate) log_statements: bool,

    /// Run the same workloads on a peer, in the same run, and print each figure with its
    /// ratio to the peer's (scripts/bench.sh installs the peer)
    #[arg(long, value_enum)]
    pub(crate) compare: Option<PeerKind>,

    /// Where the pinned BullMQ is installed (node_modules inside)
    #[arg(long, env = "LC_BULLMQ_DIR")]
    pub(crate) bullmq_dir: Option<PathBuf>,

    /// Do not set the queues' Redis markers before the workers start (then each
    /// worker's first sweep rebuilds the queue's hints from the database, which is what
    /// a Redis that lost its data gets)
    #[arg(long)]
    pub(crate) no_markers: bool,
}
