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

/// Counts the lines of a start log as it grows, reading only what was added since the
/// last count: the drain's watcher asks it every turn instead of counting the queue's
/// rows in the database (an O(jobs left) count, measured at 14.9 ms a poll in a
/// 100,000-job drain: 1.9 s of PostgreSQL's time in an 8.5 s window, a tax on the drain
/// that BullMQ's driver, polling two O(1) Redis counters, does not pay). A job started
/// again after a retry counts twice: the count says when every job may have started,
/// and the database has the last word.
#[derive(Debug)]
pub(crate) struct StartCounter {
    log: PathBuf,
    read: u64,
    lines: usize,
}

impl StartCounter {
    pub(crate) fn new(log: &Path) -> StartCounter {
        StartCounter {
            log: log.to_owned(),
            read: 0,
            lines: 0,
        }
    }

    /// The complete lines in the log so far (0 while it does not exist).
    pub(crate) fn count(&mut self) -> Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.log) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(self.lines),
            Err(err) => return Err(err).with_context(|| format!("open {}", self.log.display())),
        };
        file.seek(SeekFrom::Start(self.read))?;
        let mut added = Vec::new();
        file.read_to_end(&mut added)
            .with_context(|| format!("read {}", self.log.display()))?;
        // Only up to the last newline: a line being written is counted once it is whole.
        if let Some(last) = added.iter().rposition(|&byte| byte == b'\n') {
            self.lines += added[..=last].iter().filter(|&&byte| byte == b'\n').count();
            self.read += last as u64 + 1;
        }
        Ok(self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_log_is_counted_as_it_grows() -> Result<()> {
        use std::io::Write;
        let log = std::env::temp_dir().join(format!("lc-bench-starts-{}.log", Uuid::new_v4()));
        let mut counter = StartCounter::new(&log);
        assert_eq!(counter.count()?, 0, "no log yet");
        let mut file = std::fs::File::create(&log)?;
        file.write_all(b"a 1\nb 2\nc")?;
        assert_eq!(counter.count()?, 2, "the unfinished line waits");
        file.write_all(b" 3\n")?;
        assert_eq!(counter.count()?, 3);
        assert_eq!(counter.count()?, 3, "nothing new, nothing counted");
        file.write_all(b"d 4\ne 5\n")?;
        assert_eq!(counter.count()?, 5);
        std::fs::remove_file(&log)?;
        Ok(())
    }

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
