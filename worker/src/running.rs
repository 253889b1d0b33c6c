//! The jobs this process holds: the claim each runs by (id, attempt and claim time:
//! the fencing token) and the token that stops the handler. Shared by the fetcher
//! (adds), the completer (removes once the outcome is recorded), the heartbeat (extends
//! and stops lost leases), the executor (removes a stopped job once its handler has
//! returned) and shutdown. The lock is never held across an `.await`.
//!
//! # One execution of a job per process
//!
//! A job is listed from its claim until its task has ended, also after its lease was
//! lost and its handler told to stop, and [`RunningJobs::insert`] refuses a job that
//! is listed. A claim that the database lost in a crash (claims do not wait for the
//! disk, see `Flush` in the store) leaves its attempt running here while the job is
//! `queued` again with the attempt count from before: this worker's next claim of it
//! carries the same attempt number and the same lease owner. The claim time tells the
//! two claims apart in the database (see `lc_shared::store::Claim`), so the run of the
//! lost one can record nothing; this list, keyed by job, holds one run per job, so the
//! fetcher hands the new claim back instead of starting it.

use std::collections::HashMap;
use std::sync::Mutex;

use lc_shared::store::Claim;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    claim: Claim,
    cancel: CancellationToken,
    /// The handler finished and its result is on its way to the database.
    finishing: bool,
    /// The job was taken away and its handler told to stop; listed until it returns.
    stopping: bool,
}

impl RunningJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map half-changed (each
        // operation is one insert or remove), so a poisoned lock is still usable.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a claimed job; the returned token stops its handler. `None` when the
    /// job is listed already (see the module's doc): the claim must not run.
    pub fn insert(&self, claim: Claim) -> Option<CancellationToken> {
        let mut jobs = self.lock();
        if jobs.contains_key(&claim.id) {
            return None;
        }
        let cancel = CancellationToken::new();
        jobs.insert(
            claim.id,
            Entry {
                claim,
                cancel: cancel.clone(),
                finishing: false,
                stopping: false,
            },
        );
        Some(cancel)
    }

    /// The claims of every held job (not those being stopped: they are not ours).
    pub fn snapshot(&self) -> Vec<Claim> {
        self.lock()
            .values()
            .filter(|entry| !entry.stopping)
            .map(|entry| entry.claim)
            .collect()
    }

    /// Marks a job whose handler finished and whose result is on its way to the
    /// database (see [`RunningJobs::cancel`]).
    pub fn finishing(&self, id: Uuid, attempt: i64) {
        if let Some(entry) = self.lock().get_mut(&id)
            && entry.claim.attempt == attempt
        {
            entry.finishing = true;
        }
    }

    /// Forgets a job whose outcome is recorded (or refused).
    pub fn remove(&self, id: Uuid, attempt: i64) {
        let mut jobs = self.lock();
        if jobs
            .get(&id)
            .is_some_and(|entry| entry.claim.attempt == attempt)
        {
            jobs.remove(&id);
        }
    }

    /// Stops a job's handler; it stays listed until [`RunningJobs::remove_stopped`].
    /// False if it was not held any more, or if its result is on its way: a heartbeat
    /// that runs while the completer commits no longer finds the job running, and the
    /// completer's answer (applied, or refused and logged) is what tells.
    pub fn cancel(&self, id: Uuid, attempt: i64) -> bool {
        let mut jobs = self.lock();
        match jobs.get_mut(&id) {
            Some(entry)
                if entry.claim.attempt == attempt && !entry.finishing && !entry.stopping =>
            {
                entry.cancel.cancel();
                entry.stopping = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets a job stopped by [`RunningJobs::cancel`] once its handler has returned.
    /// A job stopped by shutdown ([`RunningJobs::cancel_all`]) stays, to be released.
    pub fn remove_stopped(&self, id: Uuid, attempt: i64) {
        let mut jobs = self.lock();
        if jobs
            .get(&id)
            .is_some_and(|entry| entry.claim.attempt == attempt && entry.stopping)
        {
            jobs.remove(&id);
        }
    }

    /// Stops every handler but keeps the jobs listed, so shutdown can release them.
    pub fn cancel_all(&self) -> usize {
        let jobs = self.lock();
        for entry in jobs.values() {
            entry.cancel.cancel();
        }
        jobs.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::RunningJobs;
    use chrono::{DateTime, Utc};
    use lc_shared::store::Claim;
    use uuid::Uuid;

    fn claim(id: Uuid, attempt: i64) -> Claim {
        Claim {
            id,
            attempt,
            claimed_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_job_whose_result_is_on_its_way_is_not_cancelled_as_lost() {
        // The heartbeat runs while the completer commits: the job is no longer
        // `running` in the database, but it was not taken away.
        let running = RunningJobs::default();
        let id = Uuid::new_v4();
        let token = running.insert(claim(id, 1)).expect("not listed yet");
        running.finishing(id, 1);
        assert!(!running.cancel(id, 1), "reported as taken away");
        assert!(!token.is_cancelled());
        assert_eq!(running.len(), 1, "the completer's answer decides");
        running.remove(id, 1);
        assert!(running.is_empty());
    }

    #[test]
    fn a_running_job_missing_from_the_heartbeat_is_stopped() {
        let running = RunningJobs::default();
        let id = Uuid::new_v4();
        let token = running.insert(claim(id, 2)).expect("not listed yet");
        running.finishing(id, 1); // another attempt's mark changes nothing
        assert!(running.cancel(id, 2));
        assert!(token.is_cancelled());
        assert!(
            running.snapshot().is_empty(),
            "no longer ours: not extended"
        );
        assert_eq!(running.len(), 1, "listed until its handler returns");
        running.remove_stopped(id, 2);
        assert!(running.is_empty());
    }

    #[test]
    fn a_job_listed_here_is_not_started_twice() {
        // A claim lost in a database crash, then claimed again by this worker: same
        // id, same attempt, same lease owner. Also while the first is being stopped.
        let running = RunningJobs::default();
        let id = Uuid::new_v4();
        let _first = running.insert(claim(id, 3)).expect("not listed yet");
        assert!(running.insert(claim(id, 3)).is_none());
        assert!(running.cancel(id, 3));
        assert!(
            running.insert(claim(id, 3)).is_none(),
            "its handler may still record"
        );
        assert!(running.insert(claim(id, 4)).is_none());
        running.remove_stopped(id, 3);
        assert!(running.insert(claim(id, 3)).is_some());
    }

    #[test]
    fn shutdown_keeps_stopped_jobs_listed_for_release() {
        let running = RunningJobs::default();
        let id = Uuid::new_v4();
        let token = running.insert(claim(id, 1)).expect("not listed yet");
        assert_eq!(running.cancel_all(), 1);
        assert!(token.is_cancelled());
        running.remove_stopped(id, 1);
        assert_eq!(running.snapshot(), vec![claim(id, 1)]);
    }
}
