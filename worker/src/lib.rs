//! The LaunchControl worker runtime: takes jobs from Redis hints (or straight from
//! the database when hints are missing), runs them under a lease, and records every
//! outcome in the database. It knows no domain: a binary puts a worker together from a
//! [`Registry`] of kinds (the deployment domain's `lc-worker` does, with
//! `lc-deployment-worker`), and a library user adds kinds the same way.
//!
//! The public surface is what a library user needs: [`run_with`], [`WorkerConfig`],
//! [`Handler`], [`JobContext`], [`JobError`], [`Registry`], [`Metrics`]. From the top
//! down (a test checks that no module uses one that uses it back):
//!
//! - `supervisor`: start-up, the tasks of one process, graceful shutdown ([`run_with`])
//! - `fetcher`: pops hints per queue and claims jobs
//! - `executor`: runs one claimed job's handler under its time limit
//! - `completer`: records finished runs in batches
//! - `lease`: heartbeats that extend this process's leases
//! - `sweeper`: expired leases, due delayed jobs, Redis rebuilds
//! - `inbox`: ingests jobs that other languages wrote to the Redis inbox stream
//! - `metrics_server`: `GET /metrics`
//! - [`handlers`]: the [`Handler`] trait, the [`Registry`] of kinds a worker runs, a
//!   handler's [`JobContext`], and the core's handlers (`noop`, `sleep`)
//! - `worker`: the state the tasks share (database, Redis, config, slots, metrics)
//! - `running`: the jobs this process holds right now
//! - `slots`: the places a job holds, and a finished run
//! - [`metrics`]: Prometheus counters and their text format
//! - `outage`: one log line when the database goes away, one when it is back
//! - [`config`]: flags and their defaults

mod completer;
pub mod config;
mod executor;
mod fetcher;
pub mod handlers;
mod inbox;
mod lease;
pub mod metrics;
mod metrics_server;
mod outage;
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
pub use handlers::{Handler, HandlerList, JobContext, JobError, Registry};
pub use metrics::Metrics;
pub use supervisor::run_with;
pub use worker::{HELD_PER_SLOT, WorkerError};

#[cfg(test)]
mod layering {
    //! The worker's modules form layers: no module (counting a directory's files as one)
    //! uses one that uses it back, directly or through others.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Top-level module → the top-level modules its files name with `crate::`.
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut pending = vec![src.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(&src).expect("under src");
                let top = relative
                    .components()
                    .next()
                    .map(|part| {
                        part.as_os_str()
                            .to_string_lossy()
                            .trim_end_matches(".rs")
                            .to_owned()
                    })
                    .unwrap_or_default();
                if top == "lib" || top == "bin" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("readable");
                let names = graph.entry(top.clone()).or_default();
                for (at, _) in text.match_indices("crate::") {
                    let rest = &text[at + "crate::".len()..];
                    let listed: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                        group
                            .split('}')
                            .next()
                            .unwrap_or("")
                            .split(',')
                            .map(|item| item.trim().split("::").next().unwrap_or(""))
                            .collect()
                    } else {
                        vec![
                            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                                .next()
                                .unwrap_or(""),
                        ]
                    };
                    for name in listed {
                        if !name.is_empty()
                            && name != top
                            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn no_module_uses_one_that_uses_it_back() {
        let graph = uses();
        // Depth-first search for a path from each module back to itself.
        for start in graph.keys() {
            let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
            let mut seen = BTreeSet::new();
            while let Some(path) = stack.pop() {
                let last = path.last().expect("non-empty").clone();
                for next in graph.get(&last).into_iter().flatten() {
                    if next == start {
                        panic!("module cycle: {} -> {start}", path.join(" -> "));
                    }
                    if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push(longer);
                    }
                }
            }
        }
        assert!(graph.contains_key("supervisor") && graph.contains_key("worker"));
    }
}
