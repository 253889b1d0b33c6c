//! Integration tests against real PostgreSQL (serializable), Redis and Docker.
//! Each test has its own database and Redis prefix (see `lc_tests`).

mod crash;
mod operator;
mod queue;
