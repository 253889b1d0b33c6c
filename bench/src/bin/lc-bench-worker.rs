//! `lc-bench-worker`: `lc-worker` (the same flags, kinds and code) plus the benchmark's
//! observer, which appends `<job id> <unix time in µs>` to the file named by
//! `LC_HANDLER_START_LOG` as each handler starts; the bench times enqueue→start and
//! drains from those lines (same host, same clock). The product's `lc-worker` has no
//! such hook.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use lc_shared::store::ClaimedJob;

fn main() -> anyhow::Result<()> {
    lc_deployment::cli::main_with(|registry| registry.on_handler_start(record_start))
}

fn record_start(job: &ClaimedJob) {
    static LOG: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("LC_HANDLER_START_LOG")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    });
    let Some(log) = log else { return };
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_micros())
        .unwrap_or(0);
    if let Ok(mut file) = log.lock() {
        let _ = writeln!(file, "{} {micros}", job.id);
    }
}
