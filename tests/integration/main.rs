//! Integration tests against real PostgreSQL (serializable), Redis and Docker.
//! Each test has its own database and Redis prefix (see `lc_tests`).

// Tests state their expectations with unwrap and expect.
#![allow(clippy::unwrap_used)]

mod cluster;
mod concurrency;
mod crash;
mod dashboard;
mod deploy;
mod events;
mod failover;
mod faults;
mod group_commit;
mod http;
mod inspect;
mod layering;
mod operator;
mod probes;
mod queue;
mod scaleout;
mod traces;
