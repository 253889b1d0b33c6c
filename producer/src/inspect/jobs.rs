//! Reading jobs: one with its history, pages of a filtered list, and waiting until
//! some have ended.

use std::time::{Duration, Instant};

use lc_shared::JobState;
use lc_shared::store::{EventRow, JobFilter, JobRow};
use uuid::Uuid;

use super::{InspectError, Inspector, Result, cursor};

/// How often [`Inspector::wait`] looks at the database.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Jobs per page unless asked otherwise, and the most one page holds.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 10_000;

/// A job and its whole history (`lc jobs show`).
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDetail {
    pub job: JobRow,
    /// Transitions and log lines, oldest first.
    pub events: Vec<EventRow>,
}

/// What [`Inspector::jobs`] lists (the filters of `lc jobs ls`) and where its page
/// starts.
#[derive(Clone, Debug)]
pub struct JobListParams {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Only jobs of this group (a deployment's id, for the deployment domain).
    pub group: Option<Uuid>,
    /// Only jobs unchanged for this long.
    pub older_than: Option<Duration>,
    /// Jobs per page, 1 to 10,000 (50 by default).
    pub limit: i64,
    /// The `next` of the page before; `None` for the first (newest) page.
    pub cursor: Option<String>,
}

impl Default for JobListParams {
    fn default() -> Self {
        JobListParams {
            state: None,
            kind: None,
            queue: None,
            group: None,
            older_than: None,
            limit: DEFAULT_PAGE,
            cursor: None,
        }
    }
}

/// One page of jobs, newest first.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    /// The cursor of the next (older) page; `None` when this page is the last. Pages
    /// follow each job's `(created_at, id)`, which never changes: walking them returns
    /// every job that existed when the walk began exactly once, whatever is enqueued
    /// meanwhile.
    pub next: Option<String>,
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
    /// A job and its history.
    pub async fn job(&self, id: Uuid) -> Result<JobDetail> {
        let job = self
            .store
            .job(id)
            .await?
            .ok_or(InspectError::JobNotFound(id))?;
        if !self.sees(&job) {
            return Err(InspectError::JobNotFound(id));
        }
        let events = self.store.events(id).await?;
        Ok(JobDetail {
            job: self.redacted(job),
            events,
        })
    }

    /// A page of the jobs `params` asks for, newest first.
    pub async fn jobs(&self, params: &JobListParams) -> Result<JobPage> {
        // A queue or kind that no job can have is a mistake worth saying (and NUL,
        // which no text column holds, would fail in the database).
        if let Some(queue) = &params.queue {
            lc_shared::job::validate_queue_name(queue)
                .map_err(|err| InspectError::Invalid(err.to_string()))?;
        }
        if let Some(kind) = &params.kind
            && !lc_shared::JobKind::is_valid_name(kind)
        {
            return Err(InspectError::Invalid(format!(
                "invalid job kind {kind:?}: kinds are 1 to 64 characters from a-z, 0-9 and '_', starting with a letter"
            )));
        }
        let limit = params.limit.clamp(1, MAX_PAGE);
        let before = params.cursor.as_deref().map(cursor::decode).transpose()?;
        let older_than_secs = params
            .older_than
            .map(|age| i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        let filter = JobFilter {
            state: params.state,
            kind: params.kind.clone(),
            queue: params.queue.clone(),
            group_id: params.group,
            owner: self.owner.clone(),
            older_than_secs,
            before,
            // One more than asked: whether it comes says whether a next page exists.
            limit: limit + 1,
        };
        let mut jobs = self.store.list_jobs(&filter).await?;
        let more = jobs.len() as i64 > limit;
        jobs.truncate(limit as usize);
        let next = match jobs.last() {
            Some(last) if more => Some(cursor::encode(last.created_at, last.id)),
            _ => None,
        };
        let jobs = jobs.into_iter().map(|job| self.redacted(job)).collect();
        Ok(JobPage { jobs, next })
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
