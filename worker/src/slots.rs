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

/// Most times [`Slot::gather`] yields to the runtime for places still being freed.
const GATHER_YIELDS: usize = 8;

impl Slot {
    /// After `first`, takes free places up to `limit` in all for one claim. Handlers
    /// that end together free their places one task after another, and the first
    /// release wakes the waiting fetcher at once (tokio runs a task just woken next, in
    /// its LIFO slot), before the other handlers have run: taking only what is free at
    /// that instant, a one-worker drain of no-op jobs claimed 13–15 jobs per pop
    /// where 50 were about to be free (6,751–7,415 pops for 100,000 jobs; 4,212–5,002
    /// with the yields), and the test below took 1 place of 50. So it yields to the
    /// runtime, letting the handlers that are ready end first, and takes what they
    /// freed; again while a yield freed more, at most [`GATHER_YIELDS`] times. A worker
    /// with every place free (an idle one, or one under light load) fills the batch at
    /// once and never yields.
    pub async fn gather(
        first: Slot,
        permits: &Arc<Semaphore>,
        held: &Arc<Semaphore>,
        limit: usize,
    ) -> Vec<Slot> {
        let mut slots = vec![first];
        let mut yields = 0;
        loop {
            let before = slots.len();
            while slots.len() < limit {
                match Slot::try_acquire(permits, held) {
                    Some(slot) => slots.push(slot),
                    None => break,
                }
            }
            let full = slots.len() >= limit;
            let gained = slots.len() > before;
            if full || yields == GATHER_YIELDS || (yields > 0 && !gained) {
                return slots;
            }
            tokio::task::yield_now().await;
            yields += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain's case: a claim waits for a place while the claim before it returns
    /// and its no-op handlers, spawned by the claim's task as the worker's are, end
    /// one after another. One worker thread, so that the order is the runtime's: the
    /// first handler's release wakes the waiting claim into the LIFO slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_waiting_claim_gathers_every_place_that_handlers_free_together() {
        let permits = Arc::new(Semaphore::new(50));
        let held = Arc::new(Semaphore::new(400));
        let claimed: Vec<Slot> = (0..50)
            .map(|_| Slot::try_acquire(&permits, &held).expect("a free place"))
            .collect();
        let claim = {
            let (permits, held) = (permits.clone(), held.clone());
            tokio::spawn(async move {
                let first = Slot::acquire(&permits, &held).await.expect("a place");
                Slot::gather(first, &permits, &held, 50).await.len()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!claim.is_finished(), "every place is taken");
        tokio::spawn(async move {
            for slot in claimed {
                tokio::spawn(async move { drop(slot) });
            }
        });
        assert_eq!(claim.await.expect("the claim"), 50);
    }

    #[tokio::test]
    async fn gathering_stops_at_the_limit_and_when_nothing_more_is_freed() {
        let permits = Arc::new(Semaphore::new(50));
        let held = Arc::new(Semaphore::new(400));
        let first = Slot::acquire(&permits, &held).await.expect("a place");
        let kept = Slot::gather(first, &permits, &held, 20).await;
        assert_eq!(kept.len(), 20);
        // 30 places left and nothing ending: it takes them and stops.
        let first = Slot::acquire(&permits, &held).await.expect("a place");
        let taken = Slot::gather(first, &permits, &held, 50).await;
        assert_eq!(taken.len(), 30);
        assert_eq!(permits.available_permits(), 0);
        // The held places bound it too.
        let permits = Arc::new(Semaphore::new(50));
        let held = Arc::new(Semaphore::new(5));
        let first = Slot::acquire(&permits, &held).await.expect("a place");
        let kept = Slot::gather(first, &permits, &held, 50).await;
        assert_eq!(kept.len(), 5);
        assert_eq!(
            permits.available_permits(),
            45,
            "a run place without a held one goes back"
        );
    }
}
