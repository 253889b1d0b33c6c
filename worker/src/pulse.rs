//! When the heartbeat loop last came round, for the liveness probe (`/healthz`). That
//! loop turns every `--heartbeat` whether the worker is idle or full; one that has not
//! turned for a whole lease has let its jobs' leases lapse, so the process is stuck
//! whatever else of it still answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Pulse {
    born: Instant,
    /// Milliseconds from `born` to the last turn.
    last: AtomicU64,
}

impl Default for Pulse {
    /// A pulse that has just beaten (a process that starts is alive).
    fn default() -> Pulse {
        Pulse {
            born: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Pulse {
    /// The loop came round now.
    pub fn beat(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// How long ago the loop last came round.
    pub fn since_last(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::Pulse;
    use std::time::Duration;

    #[test]
    fn a_beat_resets_the_time_since_the_last_one() {
        let pulse = Pulse::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(pulse.since_last() >= Duration::from_millis(30));
        pulse.beat();
        assert!(pulse.since_last() < Duration::from_millis(30));
    }
}
