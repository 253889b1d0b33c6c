//! The LaunchControl worker runtime: takes jobs from Redis hints (or straight from
//! the database when hints are missing), runs them under a lease, and records every
//! outcome in the database. It knows no domain: a binary puts a worker together from a
//! [`Registry`] of kinds (the deployment domain's `lc-worker` does, with
//! `lc-deployment`'s `worker` feature), and a library user adds kinds the same way.
//!
//! The public surface is what a library user needs: [`run_with`], [`WorkerConfig`],
//! [`Handler`], [`JobContext`], [`JobError`], [`Registry`], [`Metrics`]. From the top
//! down (`tests/integration/layering.rs` checks that no module uses one that uses it
//! back):
//!
//! - `supervisor`: start-up, the tasks of one process, graceful shutdown ([`run_with`])
//! - `fetcher`: pops hints per queue and claims jobs
//! - `executor`: runs one claimed job's handler under its time limit
//! - `completer`: records finished runs in batches
//! - `lease`: heartbeats that extend this process's leases
//! - `sweeper`: expired leases, due delayed jobs, Redis rebuilds
//! - `inbox`: ingests jobs that other languages wrote to the Redis inbox stream
//! - `keyed`: the hints that start a concurrency key's waiting jobs when a slot frees
//! - `relay`: publishes the outbox of job (and domain) events to the event stream
//! - `metrics_server`: `GET /metrics`, and the probes `/healthz` and `/readyz`
//! - [`handlers`]: the [`Handler`] trait, the [`Registry`] of kinds a worker runs, a
//!   handler's [`JobContext`], and the core's handlers (`noop`, `sleep`)
//! - `worker`: the state the tasks share (database, Redis, config, slots, metrics)
//! - `running`: the jobs this process holds right now
//! - `slots`: the places a job holds, and a finished run
//! - [`metrics`]: Prometheus counters and their text format
//! - `outage`: one log line when the database goes away, one when it is back
//! - `pulse`: when the heartbeat loop last came round (liveness)
//! - [`config`]: flags and their defaults

mod completer;
pub mod config;
mod executor;
mod fetcher;
pub mod handlers;
mod inbox;
mod keyed;
mod lease;
pub mod metrics;
mod metrics_server;
mod outage;
mod pulse;
mod relay;
mod running;
mod slots;
mod supervisor;
mod sweeper;
mod worker;

pub use config::WorkerConfig;

/// Stack of the runtime's threads: handlers nest many awaits (docker-machine, Docker,
/// the database), and unoptimized builds poll them in large frames; 2 MiB, the
/// default, is not enough there. Memory is reserved, not used, until touched.
pub const THREAD_STACK_BYTES: usize = 16 * 1024 * 1024;
pub use handlers::{
    ClaimTimes, EventsObserver, Handler, HandlerList, JobContext, JobError, Registry, StartObserver,
};
pub use metrics::Metrics;
pub use supervisor::run_with;
pub use worker::{HELD_PER_SLOT, WorkerError};
