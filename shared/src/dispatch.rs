//! Sending dispatch hints after a commit: the one owner of that step, with one failure
//! policy. A hint is only a fast path (the database is the truth): a hint that cannot be
//! sent is handed to the sweeper (its job is marked undispatched, and idle workers claim
//! due jobs from the database meanwhile), and the failure is logged once per Redis
//! outage, not once per job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{info, warn};
use uuid::Uuid;

use crate::queue::Hints;
use crate::store::{Enqueued, HintTarget, Store, error_chain};

/// Called with each batch of hints once Redis has them (see [`Dispatch::on_sent`]).
pub type HintsObserver = fn(&[HintTarget]);

/// Sends hints for committed jobs. Cheap to clone (shared).
#[derive(Clone)]
pub struct Dispatch {
    store: Store,
    /// `None` when Redis was unreachable at start: every job goes to the sweeper.
    queue: Option<Hints>,
    /// Whether the last send failed, so an outage is reported once.
    failing: Arc<AtomicBool>,
    on_sent: Option<HintsObserver>,
}

impl Dispatch {
    pub fn new(store: Store, queue: Option<Hints>) -> Dispatch {
        Dispatch {
            store,
            queue,
            failing: Arc::new(AtomicBool::new(false)),
            on_sent: None,
        }
    }

    /// Calls `observer` with each batch of hints right after Redis took it (the
    /// benchmark times commit→hint sent with it). It runs on the sending task: keep it
    /// short.
    pub fn on_sent(self, observer: Option<HintsObserver>) -> Dispatch {
        Dispatch {
            on_sent: observer,
            ..self
        }
    }

    /// Dispatches jobs enqueued in a transaction that has committed (those it made;
    /// jobs found by idempotency key were dispatched when they were made).
    pub async fn committed(&self, enqueued: &[Enqueued]) {
        if self.queue.is_none() {
            return;
        }
        let ids: Vec<Uuid> = enqueued
            .iter()
            .filter(|job| job.created)
            .map(|job| job.id)
            .collect();
        if ids.is_empty() {
            return;
        }
        match self.store.take_by_ids(&ids).await {
            Ok(targets) => {
                self.send(&targets).await;
            }
            // Not marked dispatched: the sweeper sends them.
            Err(err) => self.failed(&err, "marking jobs dispatched"),
        }
    }

    /// Sends hints for jobs already marked dispatched; true when they went out. On
    /// failure the jobs are handed back to the sweeper.
    pub async fn send(&self, targets: &[HintTarget]) -> bool {
        if targets.is_empty() {
            return true;
        }
        let sent = match &self.queue {
            Some(queue) => queue.push_hints(targets).await.map_err(|err| {
                self.failed(&err, "sending hints");
            }),
            None => Err(()),
        };
        if sent.is_ok() {
            if let Some(observer) = self.on_sent {
                observer(targets);
            }
            if self.failing.swap(false, Ordering::Relaxed) {
                info!("hints go out again");
            }
            return true;
        }
        let ids: Vec<Uuid> = targets.iter().map(|target| target.id).collect();
        if let Err(err) = self.store.mark_undispatched(&ids).await {
            // Still safe: idle workers claim due jobs straight from the database.
            self.failed(&err, "handing jobs to the sweeper");
        }
        false
    }

    fn failed(&self, err: &(dyn std::error::Error + 'static), what: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            warn!(error = %error_chain(err), "{what} failed; the sweeper dispatches these jobs (logged once until hints go out again)");
        }
    }
}
