//! Settings of the deployment handlers: the docker-machine binary and its scratch
//! space, call time limits, extra driver environment, the `local` provider's engine.
//! Flattened into `lc-worker`'s flags beside the queue core's.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lc_shared::config::parse_duration;

#[derive(Args, Clone, Debug)]
pub struct MachineConfig {
    /// The docker-machine binary to run for the docker-machine provider
    #[arg(long, env = "LC_DOCKER_MACHINE", default_value = "docker-machine")]
    pub docker_machine: PathBuf,

    /// Scratch space for docker-machine: each step gets a private store (mode 0700) made
    /// from the database and deleted after it. Nothing here is needed by any other
    /// worker; stores that a killed worker left are removed at start.
    #[arg(long, env = "LC_MACHINES_DIR", default_value = ".lc/machines")]
    pub machines_dir: PathBuf,

    /// Time limit of one docker-machine call (create, rm, inspect, ...)
    #[arg(long, env = "LC_MACHINE_TIMEOUT", value_parser = parse_duration, default_value = "10m")]
    pub machine_timeout: Duration,

    /// Extra environment for docker-machine calls, NAME=VALUE (repeatable): driver
    /// settings that are not credentials. docker-machine runs with a cleaned
    /// environment: PATH, HOME, locale, proxies, MACHINE_* settings, these, and the
    /// credential variables that the deployment's spec names.
    #[arg(long = "machine-env", value_name = "NAME=VALUE")]
    pub machine_env: Vec<String>,

    /// The Docker engine of the `local` provider (default: DOCKER_HOST, else the
    /// standard socket)
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
}
