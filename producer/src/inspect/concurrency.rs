//! Concurrency keys: their limits (read and set at run time) and how many of their jobs
//! run and wait now.

use lc_shared::concurrency::{check_key, check_limit};
use lc_shared::dispatch::Dispatch;
use lc_shared::store::{ConcurrencyKeyRow, StoreError};

use super::{InspectError, Inspector, Result};

impl Inspector {
    /// Every concurrency key (or the one named) with its limit and how many of its
    /// jobs run and wait now, by key: what `lc queues limit` lists.
    pub async fn concurrency_limits(&self, key: Option<&str>) -> Result<Vec<ConcurrencyKeyRow>> {
        Ok(self.store.concurrency_keys(key).await?)
    }

    /// Sets the limit of a concurrency key: from now on at most `limit` of its jobs
    /// run at once, across every worker. Takes effect at once, at run time: a higher
    /// limit starts waiting jobs right away (their hints are sent here); a lower one
    /// lets the jobs that run finish and starts no new one until they are fewer. A
    /// limit below 1 is an error naming the limit, and nothing is written. Returns the
    /// key as it is now.
    pub async fn set_concurrency_limit(&self, key: &str, limit: i64) -> Result<ConcurrencyKeyRow> {
        check_limit(key, limit).map_err(|err| InspectError::Invalid(err.to_string()))?;
        self.store.set_concurrency_limit(key, Some(limit)).await?;
        self.start_waiting(key).await
    }

    /// Removes the limit of a concurrency key: its jobs run like any other (they start
    /// at once). Returns the key as it is now.
    pub async fn clear_concurrency_limit(&self, key: &str) -> Result<ConcurrencyKeyRow> {
        check_key(key).map_err(|err| InspectError::Invalid(err.to_string()))?;
        self.store.set_concurrency_limit(key, None).await?;
        self.start_waiting(key).await
    }

    /// Sends hints for as many waiting jobs of `key` as may start now (best effort: the
    /// workers' database poll starts them otherwise), and reads the key back.
    async fn start_waiting(&self, key: &str) -> Result<ConcurrencyKeyRow> {
        let room = self.store.room_of(key).await?;
        if room > 0 {
            let targets = self.store.waiting_heads(&[(key.to_owned(), room)]).await?;
            Dispatch::new(self.store.clone(), self.hints.clone())
                .send(&targets)
                .await;
        }
        self.store
            .concurrency_keys(Some(key))
            .await?
            .pop()
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "concurrency key {key:?} vanished after its limit was set"
                ))
                .into()
            })
    }
}
