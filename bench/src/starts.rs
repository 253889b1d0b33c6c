//! Handler-start times, as the workers report them. Each `lc-bench-worker` the bench
//! spawns (`lc-worker` plus an observer, `src/bin/lc-bench-worker.rs`) appends
//! `<job id> <unix time in µs>` to the file named by its `LC_HANDLER_START_LOG`; this
//! file is the one place that sets that variable and reads those files.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::process::Command;
use uuid::Uuid;

/// Where the worker named `name` reports its handler starts.
pub(crate) fn start_log(work_dir: &Path, name: &str) -> PathBuf {
    work_dir.join(format!("handler-starts-{name}.log"))
}

/// Makes the worker `command` starts report each handler's first line to `log`.
pub(crate) fn report_starts(command: &mut Command, log: &Path) {
    command.env("LC_HANDLER_START_LOG", log);
}

/// The first handler start of each job (µs since the Unix epoch, the clock of every
/// process on this host) in the given workers' logs. A missing log is a worker that
/// started no handler.
pub(crate) fn handler_starts(logs: &[PathBuf]) -> Result<HashMap<Uuid, u128>> {
    let mut starts: HashMap<Uuid, u128> = HashMap::new();
    for log in logs {
        let text = match std::fs::read_to_string(log) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("read {}", log.display())),
        };
        for line in text.lines() {
            let Some((id, micros)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(id), Ok(micros)) = (id.parse::<Uuid>(), micros.parse::<u128>()) else {
                continue;
            };
            let first = starts.entry(id).or_insert(micros);
            *first = (*first).min(micros);
        }
    }
    Ok(starts)
}
