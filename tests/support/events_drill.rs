//! `lc-events-drill`: `lc-worker` (the same flags, kinds and code) whose event relay,
//! once it has added its first batch to the event stream and before the batch is marked
//! published, writes the batch's event ids (one per line) to the file named by
//! `LC_EVENTS_DRILL_PAUSE` and then stops there for good. The crash test kills it at
//! that point (SIGKILL) and checks that a restarted worker sends the batch again with
//! the same ids, and everything else the drill's jobs wrote meanwhile.

use std::time::Duration;

use lc_shared::events::Event;

fn main() -> anyhow::Result<()> {
    lc_deployment::cli::main_with(|registry| registry.on_events_sent(pause))
}

fn pause(events: &[Event]) {
    let Some(path) = std::env::var_os("LC_EVENTS_DRILL_PAUSE") else {
        return;
    };
    let ids: String = events
        .iter()
        .map(|event| format!("{}\n", event.id))
        .collect();
    let path = std::path::PathBuf::from(path);
    let partial = path.with_extension("partial");
    // Written whole, then renamed: the test never reads half a list.
    if std::fs::write(&partial, ids).is_ok() {
        let _ = std::fs::rename(&partial, &path);
    }
    // The relay's task stays here, its transaction open, until the process is killed;
    // the rest of the worker runs on.
    tokio::task::block_in_place(|| {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    })
}
