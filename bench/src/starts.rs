//! Handler-start times, as the workers report them. Each `lc-bench-worker` the bench
//! spawns (`lc-worker` plus an observer, `src/bin/lc-bench-worker.rs`) appends
//! `<job id> <handler start> <hint popped> <claim sent> <claim back>` (unix times in
//! µs, `-` for none) to the file named by its `LC_HANDLER_START_LOG`; this file is the
//! one place that sets that variable and reads those files.

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

/// One handler start and the moments of its claim (µs since the Unix epoch, the clock
/// of every process on this host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    pub(crate) handler: u128,
    /// When the pop that brought the job's hint returned; `None` for a claim from the
    /// database.
    pub(crate) popped: Option<u128>,
    pub(crate) claim_sent: Option<u128>,
    pub(crate) claimed: Option<u128>,
}

/// A line of a start log; `None` for one that is not.
fn parse_line(line: &str) -> Option<(Uuid, Start)> {
    let mut fields = line.split(' ');
    let id = fields.next()?.parse::<Uuid>().ok()?;
    let handler = fields.next()?.parse::<u128>().ok()?;
    let mut moment = || fields.next().and_then(|field| field.parse::<u128>().ok());
    let (popped, claim_sent, claimed) = (moment(), moment(), moment());
    Some((
        id,
        Start {
            handler,
            popped,
            claim_sent,
            claimed,
        },
    ))
}

/// The first handler start of each job in the given workers' logs. A missing log is a
/// worker that started no handler.
pub(crate) fn handler_starts(logs: &[PathBuf]) -> Result<HashMap<Uuid, Start>> {
    let mut starts: HashMap<Uuid, Start> = HashMap::new();
    for log in logs {
        let text = match std::fs::read_to_string(log) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("read {}", log.display())),
        };
        for (id, start) in text.lines().filter_map(parse_line) {
            let first = starts.entry(id).or_insert(start);
            if start.handler < first.handler {
                *first = start;
            }
        }
    }
    Ok(starts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines_are_read() {
        let id = Uuid::from_u128(7);
        assert_eq!(
            parse_line(&format!("{id} 50 10 20 40")),
            Some((
                id,
                Start {
                    handler: 50,
                    popped: Some(10),
                    claim_sent: Some(20),
                    claimed: Some(40),
                }
            ))
        );
        let (_, from_database) = parse_line(&format!("{id} 50 - 20 40")).expect("line");
        assert_eq!(from_database.popped, None);
        assert_eq!(from_database.claimed, Some(40));
        assert_eq!(parse_line("not-an-id 50"), None);
        assert_eq!(parse_line(&format!("{id}")), None);
    }
}
