//! The one read API over the queue core: jobs, their history, queues and workers. The
//! `lc` command, the deployment domain and (later) the HTTP API read through it, so
//! there is one way of reading and one set of output types.

use std::time::{Duration, Instant};

use lc_shared::JobState;
use lc_shared::queue::Hints;
use lc_shared::store::{JobFilter, JobRow, Store};
use uuid::Uuid;

use crate::Result;

/// How often [`Inspector::wait`] looks at the database.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Reads jobs, queues and workers. Cheap to clone.
#[derive(Clone)]
pub struct Inspector {
    store: Store,
    /// Redis, for the event stream (see [`crate::events`]).
    pub(crate) hints: Option<Hints>,
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
        Inspector { store, hints }
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
