//! The jobs this process holds: id, attempt (the fencing token) and the token that
//! stops the handler. Shared by the fetcher (adds), the completer (removes once the
//! outcome is recorded), the heartbeat (extends and drops lost leases) and shutdown.
//! The lock is never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    attempt: i64,
    cancel: CancellationToken,
    /// The handler finished and its result is on its way to the database.
    finishing: bool,
}

impl RunningJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // A panic while holding this lock cannot leave the map half-changed (each
        // operation is one insert or remove), so a poisoned lock is still usable.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a claimed job; the returned token stops its handler.
    pub fn insert(&self, id: Uuid, attempt: i64) -> CancellationToken {
        let cancel = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                attempt,
                cancel: cancel.clone(),
                finishing: false,
            },
        );
        cancel
    }

    /// Every held job with its attempt.
    pub fn snapshot(&self) -> Vec<(Uuid, i64)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (*id, entry.attempt))
            .collect()
    }

    /// Marks a job whose handler finished and whose result is on its way to the
    /// database (see [`RunningJobs::cancel`]).
    pub fn finishing(&self, id: Uuid, attempt: i64) {
        if let Some(entry) = self.lock().get_mut(&id)
            && entry.attempt == attempt
        {
            entry.finishing = true;
        }
    }

    /// Forgets a job whose outcome is recorded (or refused).
    pub fn remove(&self, id: Uuid, attempt: i64) {
        let mut jobs = self.lock();
        if jobs.get(&id).is_some_and(|entry| entry.attempt == attempt) {
            jobs.remove(&id);
        }
    }

    /// Stops a job's handler and forgets it; false if it was not held any more, or if
    /// its result is on its way: a heartbeat that runs while the completer commits no
    /// longer finds the job running, and the completer's answer (applied, or refused
    /// and logged) is what tells.
    pub fn cancel(&self, id: Uuid, attempt: i64) -> bool {
        let mut jobs = self.lock();
        match jobs.get(&id) {
            Some(entry) if entry.attempt == attempt && !entry.finishing => {
                entry.cancel.cancel();
                jobs.remove(&id);
                true
            }
            _ => false,
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
    use uuid::Uuid;

    #[test]
    fn a_job_whose_result_is_on_its_way_is_not_cancelled_as_lost() {
        // The heartbeat runs while the completer commits: the job is no longer
        // `running` in the database, but it was not taken away.
        let running = RunningJobs::default();
        let id = Uuid::new_v4();
        let token = running.insert(id, 1);
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
        let token = running.insert(id, 2);
        running.finishing(id, 1); // another attempt's mark changes nothing
        assert!(running.cancel(id, 2));
        assert!(token.is_cancelled());
        assert!(running.is_empty());
    }
}
