//! LaunchControl's queue core: everything producers and workers agree on, and nothing
//! of any domain. Deployments (the `lc-deployment` crate) are built on this crate's
//! public API only, as a library user's own job kinds would be.
//!
//! - [`job`]: the job model (kind names, priorities, new jobs) and envelope validation
//! - [`concurrency`]: concurrency keys and their limits, checked
//! - [`wire`]: the inbox wire format, parsed into new jobs
//! - [`kind`]: job kinds as units ([`kind::JobType`]) and their registry ([`kind::Kinds`])
//! - [`builtin`]: the kinds every process knows (`noop`, `sleep`)
//! - [`state`]: the job state machine, the one place that says which transitions exist
//! - [`store`]: the database (CockroachDB / PostgreSQL): pool, retry helper, job SQL
//! - [`queue`]: Redis dispatch hints, queue markers and the inbox stream
//! - [`dispatch`]: sending hints after a commit, with one failure policy
//! - [`events`]: events for upstream services: the wire format, the outbox's sources
//!   (the jobs' own, and the trait a domain implements for its own)
//! - [`migrate`]: schema migrations from `migrations/*.sql`
//! - [`secrets`]: sealing secrets at rest with `LC_SECRET_KEY`
//! - [`config`]: connection options shared by every binary
//! - [`duration`]: durations as flags and wire messages spell them
//! - [`dialect`]: the statements of tests and the benchmark that only PostgreSQL knows,
//!   with their CockroachDB equivalents
//! - [`telemetry`]: tracing set-up

pub mod builtin;
pub mod concurrency;
pub mod config;
pub mod dialect;
pub mod dispatch;
pub mod duration;
pub mod events;
pub mod job;
pub mod kind;
pub mod migrate;
#[cfg(feature = "openapi")]
mod openapi;
pub mod queue;
pub mod secrets;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod wire;

pub use job::{JobKind, NewJob, Priority};
pub use state::JobState;
