//! Jobs with a concurrency key, on the worker's side: a job whose key is full is not
//! claimed and its hint is dropped (see `lc_shared::store` claims), so whoever frees a
//! slot of a key sends the hints that start its next waiting jobs, after the commit
//! that freed it: the completer for finished jobs, the sweeper for expired leases. A
//! hint lost on the way (Redis down, this process killed before it sent them) is made
//! up by the fetchers' database poll, which claims keys with room.

use std::collections::BTreeMap;

use lc_shared::store::error_chain;
use tracing::debug;

use crate::worker::Worker;

/// Sends hints for the waiting jobs of the keys whose slots were freed (one key per
/// freed slot), through the worker's dispatch (which hands them to the sweeper when
/// Redis is down). Best effort: the database poll starts what a lost hint would have.
pub(crate) async fn hint_freed(worker: &Worker, freed: impl IntoIterator<Item = String>) {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for key in freed {
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return;
    }
    let freed: Vec<(String, i64)> = counts.into_iter().collect();
    match worker.store.waiting_heads(&freed).await {
        Ok(targets) => {
            worker.dispatch.send(&targets).await;
        }
        Err(err) => debug!(
            error = %error_chain(&err),
            "could not look up the waiting jobs of freed concurrency keys; the database poll starts them"
        ),
    }
}
