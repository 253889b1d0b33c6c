//! The places a job holds while this worker has it, and what a finished run hands to
//! the completer. Leaf types: they depend on nothing else of the worker.

use std::sync::Arc;

use lc_shared::store::Completion;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a claimed job holds: a place among the running handlers (`--concurrency`),
/// freed when its handler ends, and a place among the jobs held by this worker, freed
/// only when its result is committed. The second bound keeps finished-but-unrecorded
/// jobs few, so a slow database slows claiming instead of letting their leases pile up.
pub struct Slot {
    pub run: OwnedSemaphorePermit,
    pub held: OwnedSemaphorePermit,
}

impl Slot {
    /// Waits for a place of each kind (`None` once the semaphores are closed).
    pub async fn acquire(permits: &Arc<Semaphore>, held: &Arc<Semaphore>) -> Option<Slot> {
        let run = permits.clone().acquire_owned().await.ok()?;
        let held = held.clone().acquire_owned().await.ok()?;
        Some(Slot { run, held })
    }

    pub fn try_acquire(permits: &Arc<Semaphore>, held: &Arc<Semaphore>) -> Option<Slot> {
        let run = permits.clone().try_acquire_owned().ok()?;
        let held = held.clone().try_acquire_owned().ok()?;
        Some(Slot { run, held })
    }
}

/// A finished run and the slot it still holds.
pub struct Finished {
    pub completion: Completion,
    pub permit: Option<OwnedSemaphorePermit>,
    /// The job's concurrency key: once the result is committed, the key's slot is free
    /// and the completer sends hints for its waiting jobs.
    pub concurrency_key: Option<String>,
}
