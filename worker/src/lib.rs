//! The LaunchControl worker: takes jobs from Redis hints (or straight from the
//! database when hints are missing), runs them under a lease, and records every
//! outcome in the database.
//!
//! - [`config`]: flags and their defaults
//! - [`worker`]: start-up, the tasks of one process, graceful shutdown
//! - [`running`]: the jobs this process holds right now
//! - [`fetcher`]: pops hints per queue and claims jobs
//! - [`executor`]: runs one claimed job's handler
//! - [`completer`]: records finished runs in batches
//! - [`lease`]: heartbeats that extend this process's leases
//! - [`sweeper`]: expired leases, due delayed jobs, Redis rebuilds
//! - [`inbox`]: ingests jobs that other languages wrote to the Redis inbox stream
//! - [`handlers`]: what each job kind does
//! - [`machine`]: the docker-machine driver (timeouts, process groups, no crash reports)
//! - [`machine_store`]: docker-machine stores made per step from the database
//! - [`tls`]: a deployment's CA and client certificate
//! - [`process`]: signals to processes and process groups
//! - [`docker`]: the Docker Engine API client (bollard) for one machine's engine
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint
//! - [`outage`]: one log line when the database goes away, one when it is back

pub mod completer;
pub mod config;
pub mod docker;
pub mod executor;
pub mod fetcher;
pub mod handlers;
pub mod inbox;
pub mod lease;
pub mod machine;
pub mod machine_store;
pub mod metrics;
pub mod outage;
pub mod process;
pub mod running;
pub mod sweeper;
pub mod tls;
pub mod worker;

pub use config::WorkerConfig;

/// Stack of the runtime's threads: handlers nest many awaits (docker-machine, Docker,
/// the database), and unoptimized builds poll them in large frames; 2 MiB, the
/// default, is not enough there. Memory is reserved, not used, until touched.
pub const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;
pub use handlers::{Handler, JobContext, JobError, Registry};
pub use worker::{Worker, WorkerError, run, run_with};
