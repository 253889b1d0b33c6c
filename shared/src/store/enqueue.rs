//! Enqueue: new jobs and their first events in one statement, on the store's own
//! connection (with retries that find an earlier try's jobs) or inside a caller's
//! transaction.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tracing::Instrument;
use uuid::Uuid;

use super::rows::{Enqueued, HintTarget};
use super::{Isolation, Replay, Result, Store, StoreError, retry_within};
use crate::job::NewJob;
use crate::state::{JobState, Transition};
use crate::telemetry::job_trace;

/// The insert of new jobs and their first events, with `$on_conflict` between the
/// insert's `SELECT` and its `RETURNING`. Payloads travel as `TEXT[]`, each element
/// cast to JSONB in the statement: CockroachDB cannot take a `JSONB[]` parameter
/// (arrays of JSONB are not a column type there).
///
/// With `keyed`, the jobs' concurrency keys go in too (`$16`), and each key gets its
/// row in `concurrency_keys` (the row its claims lock) if it has none. Batches without
/// a key use the statement without them: jobs without a key pay nothing for keys.
///
/// `$15` holds the jobs' `traceparent`s, and is empty when no job of the batch has one
/// (tracing off): `UNNEST` pads the shorter arrays with NULLs, on PostgreSQL and
/// CockroachDB alike, so an untraced batch sends one empty array and nothing per job.
macro_rules! insert_jobs_sql {
    ($on_conflict:literal) => {
        insert_jobs_sql!("", "", "", "", $on_conflict)
    };
    (keyed, $on_conflict:literal) => {
        insert_jobs_sql!(
            ", $16::TEXT[]",
            ", concurrency_key",
            "
), keys AS (
    INSERT INTO concurrency_keys (concurrency_key)
    SELECT DISTINCT concurrency_key FROM input WHERE concurrency_key IS NOT NULL
    ON CONFLICT (concurrency_key) DO NOTHING",
            ", concurrency_key",
            $on_conflict
        )
    };
    ($key_input:literal, $key_name:literal, $keys:literal, $key_column:literal, $on_conflict:literal) => {
        concat!(
            "
WITH input AS (
    SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[], $4::INT8[], $5::TEXT[], $6::INT8[],
                         $7::TIMESTAMPTZ[], $8::TEXT[], $9::UUID[], $10::BOOL[], $13::INT8[],
                         $14::TEXT[], $15::TEXT[]",
            $key_input,
            ")
        AS t(id, kind, queue, priority, payload, max_attempts, run_at, idempotency_key,
             group_id, dispatched, timeout_ms, owner, traceparent",
            $key_name,
            ")",
            $keys,
            "
), inserted AS (
    INSERT INTO jobs (id, kind, queue, priority, state, payload, max_attempts, run_at,
                      idempotency_key, group_id, dispatched, timeout_ms, owner, traceparent",
            $key_column,
            ")
    SELECT id, kind, queue, priority, $11, payload::JSONB, max_attempts, COALESCE(run_at, now()),
           idempotency_key, group_id, dispatched, timeout_ms, owner, traceparent",
            $key_column,
            "
    FROM input
    ",
            $on_conflict,
            "
    RETURNING id
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, NULL, $11, 0, $12 FROM inserted
)
SELECT id FROM inserted"
        )
    };
}

/// No conflict target: a taken id (a replayed insert, or an id the producer reused)
/// and a taken idempotency key both leave the existing job alone.
const INSERT_JOBS: &str = insert_jobs_sql!("ON CONFLICT DO NOTHING");

/// For jobs that cannot conflict (see [`insert_sql`]).
const INSERT_NEW_JOBS: &str = insert_jobs_sql!("");

/// The statement a lone [`crate::NewJob`] without an idempotency key, id or
/// concurrency key goes out with on its first try: what one producer's
/// `Producer::enqueue` sends per job. The benchmark's pgbench reference runs this text.
pub const SINGLE_JOB_INSERT: &str = INSERT_NEW_JOBS;

/// [`INSERT_JOBS`] and [`INSERT_NEW_JOBS`] for batches with concurrency keys.
const INSERT_KEYED_JOBS: &str = insert_jobs_sql!(keyed, "ON CONFLICT DO NOTHING");
const INSERT_NEW_KEYED_JOBS: &str = insert_jobs_sql!(keyed, "");

/// The insert for `jobs`. Jobs without an idempotency key or an id of the caller's, on
/// the first try of their enqueue (`replayed` false), cannot conflict: their ids are
/// new. They skip `ON CONFLICT`, whose speculative insertion was 15% of PostgreSQL's
/// time in a profile of 31-row inserts. Any other insert keeps it, so that a replay
/// finds the job an earlier try made and a taken key answers with its job. Batches
/// with a concurrency key take the statements that write keys.
fn insert_sql(jobs: &[NewJob], replayed: bool) -> &'static str {
    let may_conflict = replayed
        || jobs
            .iter()
            .any(|job| job.idempotency_key.is_some() || job.id.is_some());
    let keyed = is_keyed(jobs);
    match (may_conflict, keyed) {
        (true, false) => INSERT_JOBS,
        (false, false) => INSERT_NEW_JOBS,
        (true, true) => INSERT_KEYED_JOBS,
        (false, true) => INSERT_NEW_KEYED_JOBS,
    }
}

/// Whether any job of the batch has a concurrency key.
fn is_keyed(jobs: &[NewJob]) -> bool {
    jobs.iter().any(|job| job.concurrency_key.is_some())
}

/// Ids for jobs about to be inserted: the producer's, or new ones in `order`.
pub(super) fn job_ids(jobs: &[NewJob], order: super::IdOrder) -> Vec<Uuid> {
    jobs.iter()
        .map(|job| {
            job.id.unwrap_or_else(|| match order {
                super::IdOrder::TimeOrdered => Uuid::now_v7(),
                super::IdOrder::Random => Uuid::new_v4(),
            })
        })
        .collect()
}

/// The parameters of [`INSERT_JOBS`], one array per column.
struct JobColumns<'a> {
    ids: Vec<Uuid>,
    kinds: Vec<&'a str>,
    queues: Vec<&'a str>,
    priorities: Vec<i64>,
    payloads: Vec<String>,
    max_attempts: Vec<i64>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    keys: Vec<Option<&'a str>>,
    groups: Vec<Option<Uuid>>,
    dispatched: Vec<bool>,
    timeouts: Vec<Option<i64>>,
    owners: Vec<Option<&'a str>>,
    /// Empty when no job of the batch has a trace context (see [`insert_jobs_sql`]).
    traceparents: Vec<Option<&'a str>>,
    /// Empty when no job of the batch has a key (the statement then takes none).
    concurrency_keys: Vec<Option<&'a str>>,
    queued: &'static str,
    label: &'static str,
}

impl<'a> JobColumns<'a> {
    /// With `hint_now`, due jobs are marked dispatched (the caller sends their hints).
    /// Jobs without a `traceparent` of their own take `current_trace` (the enqueue
    /// span's, see [`crate::telemetry::job_trace`]).
    fn new(
        jobs: &'a [NewJob],
        ids: &[Uuid],
        hint_now: bool,
        current_trace: Option<&'a str>,
    ) -> JobColumns<'a> {
        let now = Utc::now();
        JobColumns {
            ids: ids.to_vec(),
            kinds: jobs.iter().map(|job| job.kind.as_str()).collect(),
            queues: jobs.iter().map(|job| job.queue.as_str()).collect(),
            priorities: jobs.iter().map(|job| job.priority.as_db()).collect(),
            payloads: jobs.iter().map(|job| job.payload.to_string()).collect(),
            max_attempts: jobs.iter().map(|job| job.max_attempts).collect(),
            run_ats: jobs.iter().map(|job| job.run_at).collect(),
            keys: jobs
                .iter()
                .map(|job| job.idempotency_key.as_deref())
                .collect(),
            groups: jobs.iter().map(|job| job.group_id).collect(),
            dispatched: jobs.iter().map(|job| hint_now && job.is_due(now)).collect(),
            timeouts: jobs
                .iter()
                .map(|job| job.timeout.map(super::millis))
                .collect(),
            owners: jobs.iter().map(|job| job.owner.as_deref()).collect(),
            traceparents: if current_trace.is_some()
                || jobs.iter().any(|job| job.traceparent.is_some())
            {
                jobs.iter()
                    .map(|job| job.traceparent.as_deref().or(current_trace))
                    .collect()
            } else {
                Vec::new()
            },
            concurrency_keys: if is_keyed(jobs) {
                jobs.iter()
                    .map(|job| job.concurrency_key.as_deref())
                    .collect()
            } else {
                Vec::new()
            },
            queued: JobState::Queued.as_str(),
            label: Transition::Enqueue.label(),
        }
    }

    /// The parameters of the statement [`insert_sql`] chose: the first 15, and the
    /// keys' column (the 16th) when the batch has keys.
    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.ids,
            &self.kinds,
            &self.queues,
            &self.priorities,
            &self.payloads,
            &self.max_attempts,
            &self.run_ats,
            &self.keys,
            &self.groups,
            &self.dispatched,
            &self.queued,
            &self.label,
            &self.timeouts,
            &self.owners,
            &self.traceparents,
            &self.concurrency_keys,
        ]
    }

    /// How many of [`JobColumns::params`] the statement takes.
    fn param_count(&self) -> usize {
        if self.concurrency_keys.is_empty() {
            15
        } else {
            16
        }
    }
}

/// Inserts jobs (with `ids`) and their first events in one statement, inside
/// `client`'s transaction when it is one, then answers per job. Jobs must be validated
/// already. With `hint_now`, due jobs are marked dispatched and returned with a hint
/// target for the caller to send; otherwise the sweeper sends their hints.
async fn insert_jobs<C: GenericClient>(
    client: &C,
    jobs: &[NewJob],
    ids: &[Uuid],
    hint_now: bool,
) -> Result<Vec<Enqueued>> {
    let trace = job_trace::current_traceparent();
    let columns = JobColumns::new(jobs, ids, hint_now, trace.as_deref());
    let statement = client.prepare_cached(insert_sql(jobs, false)).await?;
    let rows = client
        .query(&statement, &columns.params()[..columns.param_count()])
        .await?;
    answers(client, jobs, &columns, &rows, false).await
}

/// Each job's answer, given the ids that [`INSERT_JOBS`] returned (`rows`). `replayed`
/// says an earlier try of the same enqueue may have committed: a job found under its
/// id is then that try's, and counts as created by this call. The reads here decide
/// nothing that is written: at read committed they see what committed before them,
/// which is the job that took the id or the key.
async fn answers<C: GenericClient>(
    client: &C,
    jobs: &[NewJob],
    columns: &JobColumns<'_>,
    rows: &[Row],
    replayed: bool,
) -> Result<Vec<Enqueued>> {
    let inserted: std::collections::HashSet<Uuid> = rows.iter().map(|row| row.get(0)).collect();
    let ids = &columns.ids;

    // Jobs not inserted: their id exists already (an earlier try of this enqueue
    // committed, or the producer reused an id), or their idempotency key does.
    let missing: Vec<Uuid> = ids
        .iter()
        .filter(|id| !inserted.contains(*id))
        .copied()
        .collect();
    let mut by_id = std::collections::HashSet::new();
    if !missing.is_empty() {
        let statement = client
            .prepare_cached("SELECT id FROM jobs WHERE id = ANY($1)")
            .await?;
        for row in client.query(&statement, &[&missing]).await? {
            by_id.insert(row.get::<_, Uuid>(0));
        }
    }
    let existing_keys: Vec<&str> = jobs
        .iter()
        .zip(ids)
        .filter(|(_, id)| !inserted.contains(*id) && !by_id.contains(*id))
        .filter_map(|(job, _)| job.idempotency_key.as_deref())
        .collect();
    let mut existing = std::collections::HashMap::new();
    if !existing_keys.is_empty() {
        let statement = client
            .prepare_cached("SELECT idempotency_key, id FROM jobs WHERE idempotency_key = ANY($1)")
            .await?;
        for row in client.query(&statement, &[&existing_keys]).await? {
            existing.insert(row.get::<_, String>(0), row.get::<_, Uuid>(1));
        }
    }

    jobs.iter()
        .zip(ids.iter().copied())
        .zip(columns.dispatched.iter().copied())
        .map(|((job, id), dispatched)| {
            if inserted.contains(&id) || (replayed && by_id.contains(&id)) {
                let hint = dispatched.then(|| HintTarget {
                    id,
                    queue: job.queue.clone(),
                    priority: job.priority,
                });
                return Ok(Enqueued {
                    id,
                    created: true,
                    hint,
                });
            }
            if by_id.contains(&id) {
                return Ok(Enqueued {
                    id,
                    created: false,
                    hint: None,
                });
            }
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let id = existing.get(key).copied().ok_or_else(|| {
                StoreError::Invalid(format!(
                    "job with idempotency key {key:?} vanished during enqueue"
                ))
            })?;
            Ok(Enqueued {
                id,
                created: false,
                hint: None,
            })
        })
        .collect()
}

/// Enqueues inside the caller's own transaction: the jobs exist if and only if the
/// caller commits. No hint is sent; the sweeper dispatches them after the commit
/// (call [`crate::queue::Hints::push_hints`] with the returned targets after
/// committing to skip that wait). The caller's transaction keeps its own isolation
/// level: the insert is correct at any (see [`Store::enqueue_within`]). Its ids are
/// random: the caller's transaction does not say which database it is on. The call is
/// an `enqueue` span of the caller's trace, when traces are exported.
pub async fn enqueue_in_transaction(
    transaction: &Transaction<'_>,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>> {
    insert_jobs(
        transaction,
        jobs,
        &job_ids(jobs, super::IdOrder::Random),
        false,
    )
    .instrument(job_trace::enqueue_span(jobs))
    .await
}

impl Store {
    /// Validated jobs in, one statement, one commit.
    pub async fn enqueue(&self, jobs: &[NewJob], hint_now: bool) -> Result<Vec<Enqueued>> {
        self.enqueue_within(jobs, hint_now, std::time::Duration::ZERO)
            .await
    }

    /// [`Store::enqueue`] that keeps retrying a database that is down, restarting or
    /// cut off (and CockroachDB's 40003) for up to `budget`. Replaying is safe: the ids
    /// are chosen once, before the first try, so a try whose commit went through but
    /// whose answer was lost is found by the next one instead of making a second job.
    ///
    /// Read committed: the insert is one statement whose `ON CONFLICT DO NOTHING`
    /// decides against the newest committed row of the id or key (it waits for a
    /// concurrent insert of the same key to commit or roll back); the reads that follow
    /// only report which job holds a taken id or key.
    ///
    /// The call is an `enqueue` span of the caller's trace, when traces are exported.
    pub async fn enqueue_within(
        &self,
        jobs: &[NewJob],
        hint_now: bool,
        budget: std::time::Duration,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_with_ids(jobs, &self.job_ids(jobs), hint_now, budget, false)
            .instrument(job_trace::enqueue_span(jobs))
            .await
    }

    /// [`Store::enqueue_within`] with the ids chosen by the caller (see [`Store::job_ids`]);
    /// `may_have_committed` says an earlier try with these ids may have committed (its
    /// outcome is unknown), so a job found under its id counts as created by this call.
    pub async fn enqueue_with_ids(
        &self,
        jobs: &[NewJob],
        ids: &[Uuid],
        hint_now: bool,
        budget: std::time::Duration,
        may_have_committed: bool,
    ) -> Result<Vec<Enqueued>> {
        let trace = job_trace::current_traceparent();
        let columns = JobColumns::new(jobs, ids, hint_now, trace.as_deref());
        // The sessions' own level (see [`build_pool`]): the insert is an implicit
        // transaction, one message and one answer.
        let level = self.level(Isolation::ReadCommitted);
        debug_assert!(self.is_session_level(level));
        let tries = std::sync::atomic::AtomicU32::new(0);
        let (columns, tries) = (&columns, &tries);
        retry_within(Replay::Safe, budget, || async move {
            // One at a time under serializable: see [`Store::statement`].
            let _turn = match level {
                Isolation::Serializable => Some(self.serial.lock().await),
                Isolation::ReadCommitted => None,
            };
            let replayed =
                may_have_committed || tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0;
            let client = self.pool.get().await?;
            let statement = client.prepare_cached(insert_sql(jobs, replayed)).await?;
            let rows = client
                .query(&statement, &columns.params()[..columns.param_count()])
                .await?;
            answers(&client, jobs, columns, &rows, replayed).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobKind;

    #[test]
    fn a_lone_new_job_goes_out_with_the_single_job_insert() {
        let job = NewJob::new(JobKind::Noop, serde_json::json!({}));
        assert_eq!(
            insert_sql(std::slice::from_ref(&job), false),
            SINGLE_JOB_INSERT
        );
        let columns = JobColumns::new(std::slice::from_ref(&job), &[Uuid::nil()], true, None);
        assert_eq!(columns.param_count(), 15);
    }
}
