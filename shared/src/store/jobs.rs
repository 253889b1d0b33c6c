//! SQL for the `jobs` and `job_events` tables. Every state change is one conditional
//! statement (state, and attempt where a worker is involved) that also appends its
//! event rows, so a change and its history commit together or not at all. Source and
//! target states come from [`crate::state::Transition`].
//!
//! # Plans: `UNNEST((SELECT $1::UUID[]), ...)`
//!
//! The statements a job passes through by id (claim, heartbeat, completion, release)
//! take their rows as arrays. Given an array parameter's value, PostgreSQL's planner
//! counts its elements; its generic plan (made once per connection) assumes ten. A
//! plan for one to three ids then always looks cheaper than the generic one, so each
//! run was planned again: 0.2–0.5 ms a statement against 0.06 ms to run it, a third
//! of PostgreSQL's time at 500 jobs/s in a profile. The first array goes in through a
//! scalar subquery, whose value the planner does not look into: every plan assumes
//! at least ten rows (a multi-array `UNNEST` is estimated as long as its longest
//! array, so one hidden array is enough), the generic one wins after five runs, and
//! its nested loop over the primary key is the right plan for any batch.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Isolation, Replay, Result, ScanBound, Store, StoreError, millis, retry, retry_within};
use crate::job::{NewJob, Priority};
use crate::state::{JobState, RunResult, Transition, after_run};

/// Where a hint for a job goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintTarget {
    pub id: Uuid,
    pub queue: String,
    pub priority: Priority,
}

/// The answer to an enqueue, one per job asked for, in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    /// False when the idempotency key named an existing job, which is returned instead.
    pub created: bool,
    /// Set when the enqueuer should send a hint now (created, due, and not left to
    /// the sweeper).
    pub hint: Option<HintTarget>,
}

/// A job a worker now holds.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: Priority,
    pub payload: serde_json::Value,
    /// The fencing token: only this attempt may record the job's outcome.
    pub attempt: i64,
    pub max_attempts: i64,
    pub group_id: Option<Uuid>,
    /// The job's own time limit per attempt, if its producer set one.
    pub timeout: Option<std::time::Duration>,
}

/// A finished run, as the worker's completer hands it to the store.
#[derive(Clone, Debug)]
pub struct Completion {
    pub id: Uuid,
    pub attempt: i64,
    pub max_attempts: i64,
    pub result: RunResult,
    /// Wait before the next attempt, when the result is retryable.
    pub retry_delay_ms: i64,
}

/// What `cancel` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled { was: JobState },
    AlreadyFinished(JobState),
    NotFound,
}

/// A job as operators see it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub priority: String,
    pub state: JobState,
    pub payload: serde_json::Value,
    pub attempt: i64,
    pub max_attempts: i64,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub idempotency_key: Option<String>,
    pub group_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One line of a job's history: a transition (with `to_state`) or a log line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub from_state: Option<JobState>,
    pub to_state: Option<JobState>,
    pub attempt: i64,
    pub worker_id: Option<Uuid>,
    pub message: Option<String>,
}

/// Filters of `lc jobs ls`.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub group_id: Option<Uuid>,
    pub older_than_secs: Option<i64>,
    pub limit: i64,
}

/// Per queue and state, how many jobs there are.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QueueDepth {
    pub queue: String,
    pub state: JobState,
    pub count: i64,
}

/// A job `lc stuck` lists, with why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StuckJob {
    pub id: Uuid,
    pub kind: String,
    pub queue: String,
    pub state: JobState,
    pub attempt: i64,
    pub lease_owner: Option<Uuid>,
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
    pub reason: String,
}

/// The claim statement around a `WHERE` clause: $1.. are bound by the callers in the
/// order (ids or queue, from states, to state, worker, lease ms, label[, limit, lower
/// bound]). The claim's one source state (`queued`) is the first of the from states.
macro_rules! const_format_claim {
    ($where:literal) => {
        concat!(
            "WITH claimed AS (
    UPDATE jobs SET state = $3, attempt = attempt + 1, lease_owner = $4,
        lease_expires_at = now() + $5::INT8 * INTERVAL '1 millisecond',
        started_at = now(), updated_at = now() ",
            $where,
            "
    RETURNING id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, ($2::TEXT[])[1], $3, attempt, $4, $6 FROM claimed
)
SELECT id, kind, queue, priority, payload, attempt, max_attempts, group_id, timeout_ms FROM claimed"
        )
    };
}

const JOB_COLUMNS: &str = "id, kind, queue, priority, state, payload, attempt, max_attempts, run_at, \
    lease_owner, lease_expires_at, last_error, idempotency_key, group_id, created_at, \
    updated_at, started_at, finished_at";

fn job_row(row: &Row) -> JobRow {
    JobRow {
        id: row.get(0),
        kind: row.get(1),
        queue: row.get(2),
        priority: Priority::from_db(row.get(3)).as_str().to_owned(),
        state: row.get(4),
        payload: row.get(5),
        attempt: row.get(6),
        max_attempts: row.get(7),
        run_at: row.get(8),
        lease_owner: row.get(9),
        lease_expires_at: row.get(10),
        last_error: row.get(11),
        idempotency_key: row.get(12),
        group_id: row.get(13),
        created_at: row.get(14),
        updated_at: row.get(15),
        started_at: row.get(16),
        finished_at: row.get(17),
    }
}

fn hint_target(row: &Row) -> HintTarget {
    HintTarget {
        id: row.get("id"),
        queue: row.get("queue"),
        priority: Priority::from_db(row.get("priority")),
    }
}

/// The insert of new jobs and their first events, with `$on_conflict` between the
/// insert's `SELECT` and its `RETURNING`. Payloads travel as `TEXT[]`, each element
/// cast to JSONB in the statement: CockroachDB cannot take a `JSONB[]` parameter
/// (arrays of JSONB are not a column type there).
macro_rules! insert_jobs_sql {
    ($on_conflict:literal) => {
        concat!(
            "
WITH input AS (
    SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::TEXT[], $4::INT8[], $5::TEXT[], $6::INT8[],
                         $7::TIMESTAMPTZ[], $8::TEXT[], $9::UUID[], $10::BOOL[], $13::INT8[])
        AS t(id, kind, queue, priority, payload, max_attempts, run_at, idempotency_key,
             group_id, dispatched, timeout_ms)
), inserted AS (
    INSERT INTO jobs (id, kind, queue, priority, state, payload, max_attempts, run_at,
                      idempotency_key, group_id, dispatched, timeout_ms)
    SELECT id, kind, queue, priority, $11, payload::JSONB, max_attempts, COALESCE(run_at, now()),
           idempotency_key, group_id, dispatched, timeout_ms
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

/// The insert for `jobs`. Jobs without an idempotency key or an id of the caller's, on
/// the first try of their enqueue (`replayed` false), cannot conflict: their ids are
/// new. They skip `ON CONFLICT`, whose speculative insertion was 15% of PostgreSQL's
/// time in a profile of 31-row inserts. Any other insert keeps it, so that a replay
/// finds the job an earlier try made and a taken key answers with its job.
fn insert_sql(jobs: &[NewJob], replayed: bool) -> &'static str {
    let may_conflict = replayed
        || jobs
            .iter()
            .any(|job| job.idempotency_key.is_some() || job.id.is_some());
    if may_conflict {
        INSERT_JOBS
    } else {
        INSERT_NEW_JOBS
    }
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
    queued: &'static str,
    label: &'static str,
}

impl<'a> JobColumns<'a> {
    /// With `hint_now`, due jobs are marked dispatched (the caller sends their hints).
    fn new(jobs: &'a [NewJob], ids: &[Uuid], hint_now: bool) -> JobColumns<'a> {
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
            queued: JobState::Queued.as_str(),
            label: Transition::Enqueue.label(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
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
        ]
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
    let columns = JobColumns::new(jobs, ids, hint_now);
    let statement = client.prepare_cached(insert_sql(jobs, false)).await?;
    let rows = client.query(&statement, &columns.params()).await?;
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
/// random: the caller's transaction does not say which database it is on.
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
    .await
}

/// The expected state of each row of a batch, one per id, bound as a column of the
/// statement's input (`UNNEST(ids, states)`) rather than as one constant: with a
/// constant (`state = 'running'`), PostgreSQL's planner may read the batch through the
/// state's partial index (`jobs_running_lease`, `jobs_queued_due`) and so read every
/// running or queued job. At serializable, those reads are predicate locks on every
/// page of that index, and every other worker's claims and completions conflict with
/// them: the main cause of serialization failures with several workers. Per row, the
/// rows are found by primary key only.
fn by_id<'a>(ids: &[Uuid], state: &'a str) -> Vec<&'a str> {
    vec![state; ids.len()]
}

fn claimed_job(row: &Row) -> ClaimedJob {
    ClaimedJob {
        id: row.get(0),
        kind: row.get(1),
        queue: row.get(2),
        priority: Priority::from_db(row.get(3)),
        payload: row.get(4),
        attempt: row.get(5),
        max_attempts: row.get(6),
        group_id: row.get(7),
        timeout: row
            .get::<_, Option<i64>>(8)
            .map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }
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
    pub async fn enqueue_within(
        &self,
        jobs: &[NewJob],
        hint_now: bool,
        budget: std::time::Duration,
    ) -> Result<Vec<Enqueued>> {
        self.enqueue_with_ids(jobs, &self.job_ids(jobs), hint_now, budget, false)
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
        let columns = JobColumns::new(jobs, ids, hint_now);
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
            let rows = client.query(&statement, &columns.params()).await?;
            answers(&client, jobs, columns, &rows, replayed).await
        })
        .await
    }

    async fn claim(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<ClaimedJob>> {
        let rows = self
            .statement(Isolation::ReadCommitted, Replay::Safe, sql, params)
            .await?;
        Ok(rows.iter().map(claimed_job).collect())
    }

    /// Claims the jobs named by hints, those still queued and due. A stale or
    /// duplicate hint simply claims nothing.
    pub async fn claim_by_ids(
        &self,
        ids: &[Uuid],
        worker: Uuid,
        lease: std::time::Duration,
    ) -> Result<Vec<ClaimedJob>> {
        // Each id with its expected state, as rows of the input: see [`by_id`].
        const SQL: &str = const_format_claim!(
            "WHERE (id, state) IN (SELECT id, state FROM UNNEST((SELECT $1::UUID[]), $7::TEXT[]) AS h(id, state))
               AND run_at <= now()"
        );
        let transition = Transition::Claim;
        let from = transition.from_strs();
        let states = by_id(ids, from[0]);
        self.claim(
            SQL,
            &[
                &ids,
                &from,
                &transition.to().as_str(),
                &worker,
                &millis(lease),
                &transition.label(),
                &states,
            ],
        )
        .await
    }

    /// Claims up to `limit` due jobs of one queue straight from the database, highest
    /// priority and oldest first: the path that needs no hint (lost hints, Redis down).
    ///
    /// One queue per statement: with `FOR UPDATE SKIP LOCKED` and `LIMIT`, CockroachDB
    /// locks every row its locking read returns before the sort and limit above it when
    /// several queues are merged; over one queue the index `jobs_queued_due (queue,
    /// priority, run_at)` yields the rows already in order, so the limit sits under the
    /// lock. `SKIP LOCKED` keeps concurrent pollers off each other's rows; the update
    /// re-checks `state`, so a row claimed meanwhile by a hint is not claimed twice.
    /// `run_at >= bound` keeps the scan off the deleted-row markers of jobs claimed
    /// before (see [`ScanBound`]). Read committed: one conditional statement.
    pub async fn claim_due(
        &self,
        queue: &str,
        limit: i64,
        worker: Uuid,
        lease: std::time::Duration,
        bound: &mut ScanBound,
    ) -> Result<Vec<ClaimedJob>> {
        const SQL: &str = const_format_claim!(
            "WHERE id IN (SELECT id FROM jobs
                          WHERE state = ANY($2) AND queue = $1 AND run_at <= now()
                            AND ($8::TIMESTAMPTZ IS NULL OR run_at >= $8)
                            AND NOT EXISTS (SELECT 1 FROM queue_settings
                                            WHERE queue_settings.queue = $1 AND paused)
                          ORDER BY priority, run_at LIMIT $7 FOR UPDATE SKIP LOCKED)
               AND state = ANY($2)"
        );
        let transition = Transition::Claim;
        let from = bound.next();
        let now = self.database_now().await?;
        let claimed = self
            .claim(
                SQL,
                &[
                    &queue,
                    &transition.from_strs(),
                    &transition.to().as_str(),
                    &worker,
                    &millis(lease),
                    &transition.label(),
                    &limit,
                    &from,
                ],
            )
            .await?;
        bound.done(now, claimed.len(), limit);
        Ok(claimed)
    }

    /// Records finished runs in one statement. Each row applies only while the job is
    /// still running under this worker and attempt; the ids that applied are returned
    /// (a missing id was fenced off: its lease expired, or it was cancelled).
    pub async fn record_completions(
        &self,
        worker: Uuid,
        completions: &[Completion],
    ) -> Result<Vec<Uuid>> {
        // At read committed a worker's completions and heartbeats run at the same time
        // over the same rows, so both lock them in id order first (`locked`): two
        // statements that lock rows in different orders deadlock, and PostgreSQL breaks
        // a deadlock only after `deadlock_timeout` (1 s). Under `--isolation
        // serializable` a process runs these statements one at a time (see
        // [`Store::statement`]), so there is no order to keep, and the locking read
        // would only add work and predicate locks (measured: two workers fell below
        // one).
        macro_rules! completion_sql {
            ($locked:literal, $join:literal) => {
                concat!(
                    "
WITH input AS (
    SELECT * FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $3::TEXT[], $4::INT8[], $5::TEXT[], $6::TEXT[],
                         $10::TEXT[])
        AS t(id, attempt, to_state, delay_ms, error, label, from_state)
)",
                    $locked,
                    ", done AS (
    UPDATE jobs j SET
        state = i.to_state,
        run_at = CASE WHEN i.to_state = $7 THEN now() + i.delay_ms * INTERVAL '1 millisecond'
                      ELSE j.run_at END,
        dispatched = false,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = COALESCE(i.error, j.last_error),
        finished_at = CASE WHEN i.to_state = $7 THEN NULL ELSE now() END,
        updated_at = now()
    FROM input i",
                    $join,
                    "
    WHERE j.id = i.id AND j.attempt = i.attempt AND j.state = i.from_state AND j.lease_owner = $9
    RETURNING j.id, j.attempt, i.to_state, i.error, i.label
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, $8, to_state, attempt, $9, COALESCE(label || ': ' || error, label) FROM done
)
SELECT id FROM done"
                )
            };
        }
        const IN_ID_ORDER: &str = completion_sql!(
            ", locked AS MATERIALIZED (
    SELECT j.id FROM jobs j JOIN input i
        ON j.id = i.id AND j.attempt = i.attempt AND j.state = i.from_state
    WHERE j.lease_owner = $9
    ORDER BY j.id
    FOR UPDATE OF j
)",
            " JOIN locked l ON l.id = i.id"
        );
        const ONE_AT_A_TIME: &str = completion_sql!("", "");
        let sql = match self.level(Isolation::ReadCommitted) {
            Isolation::ReadCommitted => IN_ID_ORDER,
            Isolation::Serializable => ONE_AT_A_TIME,
        };
        let mut ids = Vec::with_capacity(completions.len());
        let mut attempts = Vec::with_capacity(completions.len());
        let mut to_states = Vec::with_capacity(completions.len());
        let mut delays = Vec::with_capacity(completions.len());
        let mut errors: Vec<Option<&str>> = Vec::with_capacity(completions.len());
        let mut labels = Vec::with_capacity(completions.len());
        for completion in completions {
            let transition = after_run(
                &completion.result,
                completion.attempt,
                completion.max_attempts,
            );
            ids.push(completion.id);
            attempts.push(completion.attempt);
            to_states.push(transition.to().as_str());
            delays.push(completion.retry_delay_ms);
            errors.push(match &completion.result {
                RunResult::Succeeded => None,
                RunResult::Retryable(error) | RunResult::Fatal(error) => Some(error.as_str()),
            });
            labels.push(transition.label());
        }
        let queued = JobState::Queued.as_str();
        let running = JobState::Running.as_str();
        let from_states = by_id(&ids, running);
        let params: [&(dyn ToSql + Sync); 10] = [
            &ids,
            &attempts,
            &to_states,
            &delays,
            &errors,
            &labels,
            &queued,
            &running,
            &worker,
            &from_states,
        ];
        let rows = self
            .statement(Isolation::ReadCommitted, Replay::Safe, sql, &params)
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Extends the leases of the jobs this worker runs, in one statement; returns the
    /// ids it still holds. A job missing from the answer was taken away (lease expired
    /// and swept, or cancelled) and its handler must stop.
    pub async fn extend_leases(
        &self,
        worker: Uuid,
        held: &[(Uuid, i64)],
        lease: std::time::Duration,
    ) -> Result<Vec<Uuid>> {
        // At read committed, rows are locked in id order first, as completions lock
        // them; under serializable one statement at a time: see
        // [`Store::record_completions`].
        const IN_ID_ORDER: &str = "
WITH locked AS MATERIALIZED (
    SELECT j.id FROM jobs j
    JOIN UNNEST((SELECT $1::UUID[]), $2::INT8[], $4::TEXT[]) AS h(id, attempt, state)
        ON j.id = h.id AND j.attempt = h.attempt AND j.state = h.state
    WHERE j.lease_owner = $5
    ORDER BY j.id
    FOR UPDATE OF j
)
UPDATE jobs j SET lease_expires_at = now() + $3::INT8 * INTERVAL '1 millisecond'
FROM locked WHERE j.id = locked.id
RETURNING j.id";
        const ONE_AT_A_TIME: &str = "
UPDATE jobs j SET lease_expires_at = now() + $3::INT8 * INTERVAL '1 millisecond'
FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $4::TEXT[]) AS h(id, attempt, state)
WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = h.state AND j.lease_owner = $5
RETURNING j.id";
        let sql = match self.level(Isolation::ReadCommitted) {
            Isolation::ReadCommitted => IN_ID_ORDER,
            Isolation::Serializable => ONE_AT_A_TIME,
        };
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        let attempts: Vec<i64> = held.iter().map(|(_, attempt)| *attempt).collect();
        let running = by_id(&ids, JobState::Running.as_str());
        let lease_ms = millis(lease);
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                sql,
                &[&ids, &attempts, &lease_ms, &running, &worker],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Takes back up to `limit` running jobs whose lease expired (database time): back
    /// to `queued`, or `dead` when their attempts are used up (the rule of
    /// [`crate::state::after_lease_expiry`]). Safe when several sweepers run it.
    /// `lease_expires_at >= bound` keeps the scan of `jobs_running_lease` off the
    /// deleted-row markers of leases ended before (see [`ScanBound`]). Read committed:
    /// one conditional statement; the update re-checks state and expiry on the newest
    /// version of each row, so a lease extended meanwhile is left alone.
    pub async fn expire_leases(
        &self,
        limit: i64,
        bound: &mut ScanBound,
    ) -> Result<Vec<(Uuid, JobState)>> {
        const SQL: &str = concat!(
            "
WITH expired AS (
    UPDATE jobs SET
        state = CASE WHEN attempt >= max_attempts THEN $3 ELSE $2 END,
        run_at = now(),
        dispatched = false,
        finished_at = CASE WHEN attempt >= max_attempts THEN now() ELSE NULL END,
        last_error = 'lease expired: worker ' || COALESCE(lease_owner::TEXT, '?') || ' stopped heartbeating',
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND ",
            lease_expired!(),
            "
                   AND ($6::TIMESTAMPTZ IS NULL OR lease_expires_at >= $6) LIMIT $4)
      AND state = $1 AND ",
            lease_expired!(),
            "
    RETURNING id, state, attempt, last_error
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, $1, state, attempt, $5 || ': ' || last_error FROM expired
)
SELECT id, state FROM expired"
        );
        debug_assert_eq!(Transition::ExpireLease.from(), &[JobState::Running]);
        let running = JobState::Running.as_str();
        let queued = Transition::ExpireLease.to().as_str();
        let dead = JobState::Dead.as_str();
        let label = Transition::ExpireLease.label();
        let from = bound.next();
        let now = self.database_now().await?;
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&running, &queued, &dead, &limit, &label, &from],
            )
            .await?;
        bound.done(now, rows.len(), limit);
        Ok(rows
            .iter()
            .map(|row| {
                let state: String = row.get(1);
                (row.get(0), state.parse().unwrap_or(JobState::Queued))
            })
            .collect())
    }

    /// Marks up to `limit` due, queued jobs that have no hint yet (delayed jobs, retries,
    /// swept or transactionally enqueued jobs) as dispatched and returns where their
    /// hints go. Oldest first. `run_at >= bound` keeps the scan of `jobs_undispatched`
    /// off the deleted-row markers of jobs dispatched before (see [`ScanBound`]). Read
    /// committed: one conditional statement.
    pub async fn take_undispatched(
        &self,
        limit: i64,
        bound: &mut ScanBound,
    ) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
UPDATE jobs SET dispatched = true
WHERE id IN (SELECT id FROM jobs WHERE state = $1 AND NOT dispatched AND run_at <= now()
               AND ($3::TIMESTAMPTZ IS NULL OR run_at >= $3)
             ORDER BY run_at LIMIT $2)
  AND state = $1 AND NOT dispatched
RETURNING id, queue, priority";
        let queued = JobState::Queued.as_str();
        let from = bound.next();
        let now = self.database_now().await?;
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&queued, &limit, &from],
            )
            .await?;
        bound.done(now, rows.len(), limit);
        Ok(rows.iter().map(hint_target).collect())
    }

    /// Marks the named queued jobs as dispatched and returns where their hints go:
    /// used after a transactional enqueue committed, to dispatch without the sweeper.
    pub async fn take_by_ids(&self, ids: &[Uuid]) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
UPDATE jobs SET dispatched = true
WHERE id = ANY($1) AND state = $2 AND NOT dispatched AND run_at <= now()
RETURNING id, queue, priority";
        let queued = JobState::Queued.as_str();
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&ids, &queued],
            )
            .await?;
        Ok(rows.iter().map(hint_target).collect())
    }

    /// Undoes [`Store::take_undispatched`] for hints that could not be sent, so the
    /// next sweep tries again.
    pub async fn mark_undispatched(&self, ids: &[Uuid]) -> Result {
        let queued = JobState::Queued.as_str();
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "UPDATE jobs SET dispatched = false WHERE id = ANY($1) AND state = $2",
            &[&ids, &queued],
        )
        .await?;
        Ok(())
    }

    /// Due queued jobs of one queue, by id after `after`: what a rebuild of an emptied
    /// Redis sends hints for.
    pub async fn due_queued_page(
        &self,
        queue: &str,
        after: Uuid,
        limit: i64,
    ) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
SELECT id, queue, priority FROM jobs
WHERE state = $1 AND queue = $2 AND run_at <= now() AND id > $3
ORDER BY id LIMIT $4";
        let queued = JobState::Queued.as_str();
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[&queued, &queue, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(hint_target).collect())
    }

    /// Hands back jobs this worker could not finish before shutting down: queued again
    /// at once, the attempt not counted. Returns where their hints go.
    pub async fn release(&self, worker: Uuid, held: &[(Uuid, i64)]) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
WITH released AS (
    UPDATE jobs j SET state = $4, run_at = now(), dispatched = true, lease_owner = NULL,
        lease_expires_at = NULL, max_attempts = j.max_attempts + 1, updated_at = now()
    FROM UNNEST((SELECT $1::UUID[]), $2::INT8[], $7::TEXT[]) AS h(id, attempt, state)
    WHERE j.id = h.id AND j.attempt = h.attempt AND j.state = h.state AND j.lease_owner = $5
    RETURNING j.id, j.attempt, j.queue, j.priority
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
    SELECT id, $3, $4, attempt, $5, $6 FROM released
)
SELECT id, queue, priority FROM released";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = held.iter().map(|(id, _)| *id).collect();
        let attempts: Vec<i64> = held.iter().map(|(_, attempt)| *attempt).collect();
        let transition = Transition::Release;
        let running = JobState::Running.as_str();
        let queued = transition.to().as_str();
        let label = transition.label();
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Safe,
                SQL,
                &[
                    &ids,
                    &attempts,
                    &running,
                    &queued,
                    &worker,
                    &label,
                    &by_id(&ids, running),
                ],
            )
            .await?;
        Ok(rows.iter().map(hint_target).collect())
    }

    /// Cancels a queued or running job. A running job's worker notices at its next
    /// heartbeat (the job is no longer running under its lease) and stops the handler.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<CancelOutcome> {
        self.operator_transition(id, Transition::Cancel, reason)
            .await
            .map(|found| match found {
                OperatorResult::Applied { was } => CancelOutcome::Cancelled { was },
                OperatorResult::NotApplicable(state) => CancelOutcome::AlreadyFinished(state),
                OperatorResult::NotFound => CancelOutcome::NotFound,
            })
    }

    /// Applies an operator's transition (cancel, revive, requeue) to one job, in one
    /// transaction: read its state and lock the row (`FOR UPDATE`), check the state
    /// machine allows it, update under the same state and attempt, append the event.
    /// Read committed: the decision is made on a locked row, which no other
    /// transaction can change until this one ends.
    pub async fn operator_transition(
        &self,
        id: Uuid,
        transition: Transition,
        message: &str,
    ) -> Result<OperatorResult> {
        let set = match transition {
            Transition::Cancel => {
                "state = $4, lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), \
                 last_error = COALESCE(last_error, $5)"
            }
            // A dead job gets as many new attempts as it had.
            Transition::Revive => {
                "state = $4, run_at = now(), dispatched = false, finished_at = NULL, \
                 max_attempts = attempt + max_attempts"
            }
            // The worker is gone: the attempt counts, but the job gets at least one more.
            Transition::Requeue => {
                "state = $4, run_at = now(), dispatched = false, lease_owner = NULL, \
                 lease_expires_at = NULL, max_attempts = GREATEST(max_attempts, attempt + 1), \
                 last_error = $5"
            }
            other => {
                return Err(StoreError::Invalid(format!(
                    "{other:?} is not an operator transition"
                )));
            }
        };
        let update = format!(
            "UPDATE jobs SET {set}, updated_at = now() WHERE id = $1 AND state = $2 AND attempt = $3"
        );
        let to = transition.to().as_str();
        retry(Replay::Safe, || {
            let update = update.as_str();
            async move {
                let mut client = self.pool.get().await?;
                let tx = self.begin(&mut client, Isolation::ReadCommitted).await?;
                let Some(row) = tx
                    .query_opt(
                        "SELECT state, attempt FROM jobs WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok(OperatorResult::NotFound);
                };
                let state_text: String = row.get(0);
                let attempt: i64 = row.get(1);
                let state: JobState = state_text.parse().map_err(StoreError::Invalid)?;
                if !transition.from().contains(&state) {
                    return Ok(OperatorResult::NotApplicable(state));
                }
                // Only some SET clauses use the message ($5); PostgreSQL refuses
                // parameters a statement does not use.
                let with_message: [&(dyn ToSql + Sync); 5] =
                    [&id, &state_text, &attempt, &to, &message];
                let params = if update.contains("$5") {
                    &with_message[..]
                } else {
                    &with_message[..4]
                };
                // The row is locked, so the update applies; should it not, report the
                // state it has now.
                if tx.execute(update, params).await? == 0 {
                    let now: String = tx
                        .query_one("SELECT state FROM jobs WHERE id = $1", &[&id])
                        .await?
                        .get(0);
                    return Ok(OperatorResult::NotApplicable(
                        now.parse().map_err(StoreError::Invalid)?,
                    ));
                }
                tx.execute(
                    "INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &id,
                        &state_text,
                        &to,
                        &attempt,
                        &format!("{}: {message}", transition.label()),
                    ],
                )
                .await?;
                tx.commit().await?;
                Ok(OperatorResult::Applied { was: state })
            }
        })
        .await
    }

    /// Appends a log line (not a transition) to a job's history, only while `attempt`
    /// still holds it, so a fenced-off worker cannot write into a later attempt's story.
    pub async fn append_log(&self, id: Uuid, attempt: i64, worker: Uuid, message: &str) -> Result {
        const SQL: &str = "
INSERT INTO job_events (job_id, from_state, to_state, attempt, worker_id, message)
SELECT $1, NULL, NULL, $2, $3, $4
WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND attempt = $2 AND state = $5)";
        let running = JobState::Running.as_str();
        // Read committed: one statement; its `EXISTS` sees the row as committed when
        // the statement starts, so a line lands in the attempt that was live then,
        // exactly as if it had been serialized just before a concurrent transition.
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            SQL,
            &[&id, &attempt, &worker, &message, &running],
        )
        .await?;
        Ok(())
    }

    /// Test and drill support: records that a handler's effect happened for an attempt,
    /// only while that attempt is the job's live one (running, same attempt, lease held
    /// by `worker`), so the drills prove that a stale attempt can record nothing. The
    /// job's row is locked (`FOR UPDATE`) so that, at read committed too, no transition
    /// commits between the check and the write. Returns whether it was recorded.
    pub async fn record_effect(&self, id: Uuid, attempt: i64, worker: Uuid) -> Result<bool> {
        const SQL: &str = "
INSERT INTO job_effects (job_id, attempt, worker_id)
SELECT id, attempt, lease_owner FROM jobs
WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = $4
FOR UPDATE
RETURNING job_id";
        let running = JobState::Running.as_str();
        // Not replayed after an unknown outcome: a second row would look like the
        // effect happening twice.
        // Read committed: the locking read re-checks its condition on the newest
        // version of the job's row and holds it until the insert commits.
        let rows = self
            .statement(
                Isolation::ReadCommitted,
                Replay::Unsafe,
                SQL,
                &[&id, &attempt, &worker, &running],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    pub async fn job(&self, id: Uuid) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            Ok(client
                .query_opt(sql.as_str(), &[&id])
                .await?
                .as_ref()
                .map(job_row))
        })
        .await
    }

    /// A job's whole history, oldest first.
    pub async fn events(&self, id: Uuid) -> Result<Vec<EventRow>> {
        const SQL: &str = "SELECT at, from_state, to_state, attempt, worker_id, message
                           FROM job_events WHERE job_id = $1 ORDER BY at, to_state IS NULL";
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client.query(SQL, &[&id]).await?;
            Ok(rows
                .iter()
                .map(|row| EventRow {
                    at: row.get(0),
                    from_state: row.get(1),
                    to_state: row.get(2),
                    attempt: row.get(3),
                    worker_id: row.get(4),
                    message: row.get(5),
                })
                .collect())
        })
        .await
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::TEXT IS NULL OR state = $1)
               AND ($2::TEXT IS NULL OR kind = $2)
               AND ($3::TEXT IS NULL OR queue = $3)
               AND ($4::UUID IS NULL OR group_id = $4)
               AND ($5::INT8 IS NULL OR updated_at < now() - $5 * INTERVAL '1 second')
             ORDER BY created_at DESC LIMIT $6"
        );
        let state = filter.state.map(|state| state.as_str());
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    sql.as_str(),
                    &[
                        &state,
                        &filter.kind,
                        &filter.queue,
                        &filter.group_id,
                        &filter.older_than_secs,
                        &filter.limit,
                    ],
                )
                .await?;
            Ok(rows.iter().map(job_row).collect())
        })
        .await
    }

    /// How many jobs are in each state, by queue.
    pub async fn job_counts(&self) -> Result<Vec<QueueDepth>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state ORDER BY queue, state",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| QueueDepth {
                    queue: row.get(0),
                    state: row.get(1),
                    count: row.get(2),
                })
                .collect())
        })
        .await
    }
}

/// What an operator transition found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorResult {
    Applied {
        was: JobState,
    },
    /// The job is in a state this transition does not start from.
    NotApplicable(JobState),
    NotFound,
}
