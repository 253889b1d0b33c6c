//! Database outages as the log tells them: one warning when a component first finds
//! the database unreachable, one line when it answers again, and nothing per retry in
//! between (a restart used to leave hundreds of lines). Errors the database answers
//! with (a bug, a constraint) are still logged every time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lc_shared::store::{StoreError, error_chain};
use tracing::{debug, info, warn};

/// The outage state of one component of the worker.
pub struct Outage {
    component: &'static str,
    down_since: Mutex<Option<Instant>>,
    /// When the last outage of this component ended.
    back_at: Mutex<Option<Instant>>,
}

impl Outage {
    pub const fn new(component: &'static str) -> Outage {
        Outage {
            component,
            down_since: Mutex::new(None),
            back_at: Mutex::new(None),
        }
    }

    fn down_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The guarded value is one Option written in one step: a poisoned lock still
        // holds a consistent value.
        self.down_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn back_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // As `down_since`: one Option written in one step.
        self.back_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reports a failed database call; `doing` says what waits ("claiming jobs").
    pub fn failed(&self, err: &StoreError, doing: &str) {
        let error = error_chain(err);
        if !err.is_unavailable() {
            warn!(component = self.component, error = %error, "{doing} failed");
            return;
        }
        let mut down = self.down_since();
        if down.is_none() {
            *down = Some(Instant::now());
            warn!(component = self.component, error = %error, "{doing}: waiting for the database, retrying until it answers");
        } else {
            debug!(component = self.component, error = %error, "database still unavailable");
        }
    }

    /// Reports a database call that worked: ends an outage, if there was one.
    pub fn ok(&self) {
        let since = self.down_since().take();
        if let Some(since) = since {
            *self.back_at() = Some(Instant::now());
            info!(component = self.component, down_for = ?since.elapsed(), "database is back");
        }
    }

    /// Whether this component finds the database unreachable now, or found it back less
    /// than `window` ago.
    pub fn down_or_back_within(&self, window: Duration) -> bool {
        if self.down_since().is_some() {
            return true;
        }
        self.back_at().is_some_and(|back| back.elapsed() < window)
    }

    /// Whether this component finds the database unreachable now.
    pub fn is_down(&self) -> bool {
        self.down_since().is_some()
    }
}

/// One [`Outage`] per component of a worker process.
pub struct Outages {
    pub start: Outage,
    pub fetcher: Outage,
    pub heartbeat: Outage,
    pub sweeper: Outage,
    pub completer: Outage,
    pub inbox: Outage,
    pub relay: Outage,
}

impl Default for Outages {
    fn default() -> Outages {
        Outages {
            start: Outage::new("start"),
            fetcher: Outage::new("fetcher"),
            heartbeat: Outage::new("heartbeat"),
            sweeper: Outage::new("sweeper"),
            completer: Outage::new("completer"),
            inbox: Outage::new("inbox"),
            relay: Outage::new("relay"),
        }
    }
}
