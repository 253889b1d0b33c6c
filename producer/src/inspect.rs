//! The one read API over the queue core: jobs, their history, queues and workers, and
//! the limits of concurrency keys (read and set). The `lc` command, the deployment
//! domain and (later) the HTTP API read through it, so there is one way of reading and
//! one set of output types.

use std::time::{Duration, Instant};

use lc_shared::JobState;
use lc_shared::concurrency::check_limit;
use lc_shared::dispatch::Dispatch;
use lc_shared::queue::Hints;
use lc_shared::store::{ConcurrencyKeyRow, JobFilter, JobRow, Store};
use uuid::Uuid;

use crate::Result;

/// How often [`Inspector::wait`] looks at the database.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Reads jobs, queues and workers. Cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    store: Store,
    /// Sends the hints that start waiting jobs when a concurrency limit rises.
    dispatch: Dispatch,
}

/// The states of jobs waited for, once all ended or the time was up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Waited {
    /// Each job's state, in the order asked; `None` for an id that names no job.
    pub states: Vec<(Uuid, Option<JobState>)>,
    /// Whether every job ended (succeeded, dead or cancelled).
    pub all_ended: bool,
}

impl Inspector {
    pub fn new(store: Store, hints: Option<Hints>) -> Inspector {
        Inspector {
            dispatch: Dispatch::new(store.clone(), hints),
            store,
        }
    }

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
        check_limit(key, limit)?;
        self.store.set_concurrency_limit(key, Some(limit)).await?;
        self.start_waiting(key).await
    }

    /// Removes the limit of a concurrency key: its jobs run like any other (they start
    /// at once). Returns the key as it is now.
    pub async fn clear_concurrency_limit(&self, key: &str) -> Result<ConcurrencyKeyRow> {
        lc_shared::concurrency::check_key(key)?;
        self.store.set_concurrency_limit(key, None).await?;
        self.start_waiting(key).await
    }

    /// Sends hints for as many waiting jobs of `key` as may start now (best effort: the
    /// workers' database poll starts them otherwise), and reads the key back.
    async fn start_waiting(&self, key: &str) -> Result<ConcurrencyKeyRow> {
        let room = self.store.room_of(key).await?;
        if room > 0 {
            let targets = self.store.waiting_heads(&[(key.to_owned(), room)]).await?;
            self.dispatch.send(&targets).await;
        }
        self.store
            .concurrency_keys(Some(key))
            .await?
            .pop()
            .ok_or_else(|| {
                lc_shared::store::StoreError::Invalid(format!(
                    "concurrency key {key:?} vanished after its limit was set"
                ))
                .into()
            })
    }

    /// A job, or `None` when no job has this id.
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRow>> {
        Ok(self.store.job(id).await?)
    }

    /// Jobs matching a filter, newest first.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        Ok(self.store.list_jobs(filter).await?)
    }

    /// Waits until every job of `ids` ended, or `timeout` passed, or one of them names
    /// no job (then at once: waiting cannot help).
    pub async fn wait(&self, ids: &[Uuid], timeout: Duration) -> Result<Waited> {
        let started = Instant::now();
        loop {
            let found = self.store.job_states(ids).await?;
            let states: Vec<(Uuid, Option<JobState>)> = ids
                .iter()
                .map(|id| {
                    let state = found.iter().find(|(seen, _)| seen == id);
                    (*id, state.map(|(_, state)| *state))
                })
                .collect();
            let missing = states.iter().any(|(_, state)| state.is_none());
            let all_ended = states
                .iter()
                .all(|(_, state)| state.is_some_and(JobState::is_terminal));
            if all_ended || missing || started.elapsed() >= timeout {
                return Ok(Waited { states, all_ended });
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}
