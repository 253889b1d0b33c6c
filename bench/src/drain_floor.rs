//! The drain floor: what lc's own statements allow a drain on this server, with no
//! worker around them. The same preloaded no-op jobs are claimed by id
//! (`Store::claim_by_ids`, the statement a popped hint leads to) and recorded succeeded
//! (`Store::record_completions`, the completer's statement), by K simulated workers
//! that each keep the worker's shape: `--concurrency` handlers running (a no-op
//! handler ends as it starts), [`HELD_PER_SLOT`] times as many jobs held until their
//! results are committed, claims of at most `--concurrency` jobs with two in flight,
//! one completion write in flight gathering whatever finished meanwhile. What they leave
//! out is everything else a worker does: no Redis, no handler tasks, no heartbeats,
//! no event relay. So the floor's rate is the most a drain with these statements could
//! reach here, and the drain's rate as a share of it is what the worker costs.
//!
//! Beside it runs the floor of any durable queue that keeps its jobs
//! ([`Statements::Bare`]): the same shape, with each claim and each completion only the
//! update of the job rows (the claim without waiting for the flush, the completion
//! waiting, as lc's): no history rows, no event for the outbox, no fencing by claim. It
//! is what durability alone allows a drain here, whatever else a queue records.
//!
//! And the floor of a durable queue with the least outbox ([`Statements::Outbox`]):
//! the bare updates, each also inserting one event row per job (its new state) into a
//! table of its own in the same statement, and one relay beside the simulated workers
//! that takes the oldest events in batches and deletes them (`DELETE ... RETURNING`).
//! Events are what the brief asks of lc (the outbox rule), so this is what durability
//! with an outbox allows a drain here: a target above it is above what any design of
//! lc's could reach on this server, a target below it and above lc's floor is lc's
//! history and outbox to make cheaper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use lc_shared::state::RunResult;
use lc_shared::store::{ClaimedJob, Completion, Store};
use lc_worker::HELD_PER_SLOT;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::bench::Bench;
use crate::rows::Unit;
use crate::stats::{cpu_per_job, cpu_sample, cpu_split, pg_delta, pg_stats, redis_admin, round};

/// Claims in flight per simulated worker, as the worker's fetch loop keeps them.
const CLAIMS_IN_FLIGHT: usize = 2;
/// Most completions in one statement, as the worker's completer writes them.
const MAX_COMPLETIONS: usize = 500;
/// The lease the floor's claims take (they are recorded long before it ends).
const LEASE: Duration = Duration::from_secs(60);

/// What the simulated workers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Statements {
    /// lc's own: `Store::claim_by_ids` and `Store::record_completions`, with their
    /// history rows (the outbox) and their fences.
    Lc,
    /// The least a durable queue that keeps its jobs writes: one update of the job rows
    /// to claim them (on the pool that does not wait for the flush, as lc's claims) and
    /// one to record them succeeded (waiting for it).
    Bare,
    /// [`Statements::Bare`] with one event row per transition, inserted in the same
    /// statement, and a relay deleting them in batches ([`OUTBOX_RELAY`]).
    Outbox,
}

impl Statements {
    fn name(self) -> &'static str {
        match self {
            Statements::Lc => "lc",
            Statements::Bare => "bare",
            Statements::Outbox => "outbox",
        }
    }

    /// The claim and completion statements, where they are not lc's own (`None`).
    fn sql(self) -> Option<(&'static str, &'static str)> {
        match self {
            Statements::Lc => None,
            Statements::Bare => Some((BARE_CLAIM, BARE_COMPLETE)),
            Statements::Outbox => Some((OUTBOX_CLAIM, OUTBOX_COMPLETE)),
        }
    }
}

/// Creates [`Statements::Outbox`]'s table afresh: an event per row, in the order of a
/// sequence, with what an event says (the job, its new state, when). Logged, as any
/// outbox must be.
const OUTBOX_CREATE: &str = "DROP TABLE IF EXISTS lc_bench_floor_outbox;
CREATE TABLE lc_bench_floor_outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id UUID NOT NULL,
    to_state TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Removes [`OUTBOX_CREATE`]'s table once its relay is done.
const OUTBOX_DROP: &str = "DROP TABLE lc_bench_floor_outbox";

/// [`Statements::Outbox`]'s claim: [`BARE_CLAIM`] and an event per claimed job.
const OUTBOX_CLAIM: &str = "WITH claimed AS (
    UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1,
        lease_owner = $2, lease_expires_at = now() + INTERVAL '60 seconds',
        started_at = now(), updated_at = now()
    FROM UNNEST((SELECT $1::UUID[]), $3::TEXT[]) AS input(id, state)
    WHERE jobs.id = input.id AND jobs.state = input.state
    RETURNING jobs.id
)
INSERT INTO lc_bench_floor_outbox (job_id, to_state) SELECT id, 'running' FROM claimed";

/// [`Statements::Outbox`]'s completion: [`BARE_COMPLETE`] and an event per job.
const OUTBOX_COMPLETE: &str = "WITH done AS (
    UPDATE jobs SET state = 'succeeded', finished_at = now(),
        updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    FROM UNNEST((SELECT $1::UUID[]), $3::TEXT[]) AS input(id, state)
    WHERE jobs.id = input.id AND jobs.state = input.state AND jobs.lease_owner = $2
    RETURNING jobs.id
)
INSERT INTO lc_bench_floor_outbox (job_id, to_state) SELECT id, 'succeeded' FROM done";

/// [`Statements::Outbox`]'s relay: the oldest events, taken and deleted in one
/// statement, as lc's relay takes `--events-batch` (1,000) by default.
const OUTBOX_RELAY: &str = "DELETE FROM lc_bench_floor_outbox
WHERE seq IN (SELECT seq FROM lc_bench_floor_outbox ORDER BY seq LIMIT 1000)
RETURNING seq, job_id, to_state, at";

/// The relay's batch ([`OUTBOX_RELAY`]'s `LIMIT`) and its wait after a short batch, as
/// lc's relay waits `--events-interval` (100 ms) by default.
const OUTBOX_BATCH: usize = 1000;
const OUTBOX_IDLE: Duration = Duration::from_millis(100);

/// [`Statements::Bare`]'s claim: the job rows, nothing else. The ids go in through a
/// scalar subquery, for one generic plan, and each row's expected state as a column of
/// the input ($3), as lc's do (see the plans note and `by_id` in
/// `lc_shared::store::complete`): with the state a constant (`state = 'queued'`), the
/// planner turned to reading the state's partial index, every queued job, for each
/// claim (0.5 s a claim, 2,389 jobs/s in one two-worker bare floor).
const BARE_CLAIM: &str = "UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1,
    lease_owner = $2, lease_expires_at = now() + INTERVAL '60 seconds', started_at = now(),
    updated_at = now()
FROM UNNEST((SELECT $1::UUID[]), $3::TEXT[]) AS input(id, state)
WHERE jobs.id = input.id AND jobs.state = input.state";

/// [`Statements::Bare`]'s completion: the job rows, nothing else.
const BARE_COMPLETE: &str = "UPDATE jobs SET state = 'succeeded', finished_at = now(),
    updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
FROM UNNEST((SELECT $1::UUID[]), $3::TEXT[]) AS input(id, state)
WHERE jobs.id = input.id AND jobs.state = input.state AND jobs.lease_owner = $2";

impl Bench {
    /// The floor for `workers` simulated workers sending `statements` over a freshly
    /// preloaded queue of `--drain-jobs` jobs (its rows: [`Bench::floor_rows`]).
    pub(crate) async fn drain_floor(
        &mut self,
        workers: usize,
        statements: Statements,
    ) -> Result<Value> {
        let jobs = self.args.drain_jobs;
        let queue = self.queue_name(&format!("drain-floor-{}-{workers}", statements.name()));
        self.preload(&queue, jobs).await?;
        let client = self.store.client().await?;
        let ids: Vec<Uuid> = client
            .query(
                "SELECT id FROM jobs WHERE queue = $1 AND state = 'queued' ORDER BY id",
                &[&queue],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        ensure!(
            ids.len() == jobs,
            "{} of {jobs} floor jobs queued",
            ids.len()
        );
        // Each simulated worker's connections: its claims and its completion write;
        // and the outbox's relay.
        let store = self
            .args
            .connect
            .store(workers * (CLAIMS_IN_FLIGHT + 1) + 1)?;
        if statements == Statements::Outbox {
            client.batch_execute(OUTBOX_CREATE).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pg_before = pg_stats(&client).await?;
        let cpu_before = cpu_sample(&[]);
        let clock = Instant::now();
        let stop_relay = Arc::new(AtomicBool::new(false));
        let relay = (statements == Statements::Outbox)
            .then(|| tokio::spawn(outbox_relay(store.clone(), stop_relay.clone())));
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let mut simulated = JoinSet::new();
        for _ in 0..workers {
            simulated.spawn(simulated_worker(
                store.clone(),
                ids.clone(),
                next.clone(),
                self.args.worker_concurrency.max(1),
                statements,
            ));
        }
        let mut recorded = 0;
        while let Some(joined) = simulated.join_next().await {
            recorded += joined??;
        }
        let seconds = clock.elapsed().as_secs_f64();
        let cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
        // The relay publishes what the last completions wrote, then stops; every event
        // must have passed through it once.
        stop_relay.store(true, Ordering::Release);
        let relayed = match relay {
            Some(relay) => {
                let (relayed, finished) = relay.await??;
                client.batch_execute(OUTBOX_DROP).await?;
                ensure!(
                    relayed == 2 * jobs,
                    "the floor's relay took {relayed} events of {}",
                    2 * jobs
                );
                Some(json!({
                    "events": relayed,
                    "trailed_s": round(finished.duration_since(clock).as_secs_f64() - seconds, 3),
                }))
            }
            None => None,
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pg = pg_delta(&pg_before, &pg_stats(&client).await?, jobs as f64, 0.0);
        ensure!(
            recorded == jobs,
            "the floor recorded {recorded} of {jobs} jobs"
        );
        let succeeded: i64 = client
            .query_one(
                "SELECT count(*) FROM jobs WHERE queue = $1 AND state = 'succeeded'",
                &[&queue],
            )
            .await?
            .get(0);
        ensure!(
            succeeded == jobs as i64,
            "{succeeded} of {jobs} floor jobs succeeded"
        );
        let rate = jobs as f64 / seconds;
        let cpu_us_per_job = cpu_per_job(&cpu, jobs as f64);
        self.remove_floor_jobs(&queue).await?;
        Ok(json!({
            "workers": workers,
            "statements": statements.name(),
            "concurrency_per_worker": self.args.worker_concurrency,
            "jobs": jobs,
            "seconds": round(seconds, 3),
            "jobs_per_s": round(rate, 0),
            "verified_succeeded": succeeded,
            "queue": queue,
            "cpu": cpu,
            "cpu_us_per_job": cpu_us_per_job,
            "postgres": pg,
            "relay": relayed,
        }))
    }
}

impl Bench {
    /// [`Bench::drain_floor`], or `None` with a note of why it failed, or under
    /// `--no-floors`.
    pub(crate) async fn floor_or_note(
        &mut self,
        workers: usize,
        statements: Statements,
    ) -> Option<Value> {
        if self.args.no_floors {
            return None;
        }
        match self.drain_floor(workers, statements).await {
            Ok(floor) => Some(floor),
            Err(err) => {
                let name = statements.name();
                self.note(format!("drain floor ({name}), {workers} workers: {err:#}"));
                None
            }
        }
    }

    /// Removes what the floor leaves: its jobs and their history (else the next
    /// workers' event relays would publish 300,000 transitions nobody is timed for) and
    /// their hints in Redis; they are no longer counted among the bench's jobs.
    async fn remove_floor_jobs(&mut self, queue: &str) -> Result<()> {
        self.remove_jobs_of(queue).await?;
        self.enqueued.remove(queue);
        let mut redis = redis_admin(&self.args.connect.redis_url).await?;
        let _: i64 = redis::cmd("DEL")
            .arg(&self.queue.ready_keys(queue)[..])
            .query_async(&mut redis)
            .await?;
        Ok(())
    }

    /// The floor's rows under its drain's: its rate, the drain's share of it, the
    /// floor's CPU per job, and, given the drain's target rate against the peer, whether
    /// that target is within what the statements allow here; then the same for each of
    /// the `others` floors (bare, outbox) that ran.
    pub(crate) fn floor_rows(
        &mut self,
        workers: usize,
        drain: &Value,
        floor: &Value,
        others: &[(Statements, Option<&Value>)],
        target: Option<f64>,
    ) {
        let rate = floor["jobs_per_s"].as_f64().unwrap_or(0.0);
        let drained = drain["jobs_per_s"].as_f64().unwrap_or(0.0);
        self.info_row(
            format!("  floor: lc's claim and completion statements alone ({workers}w)"),
            Unit::JobsPerS,
            vec![rate],
        );
        self.info_row(
            format!("  drain / floor ({workers}w)"),
            Unit::Percent,
            vec![if rate > 0.0 { drained / rate } else { 0.0 }],
        );
        let per_job = &floor["cpu_us_per_job"];
        let of = |group: &str| per_job[group].as_f64().unwrap_or(0.0);
        self.info_row(
            format!("  floor's CPU per job: postgres / lc-bench ({workers}w)"),
            Unit::Micros,
            vec![of("postgres"), of("lc-bench")],
        );
        // The drain's target (the peer's rate times issue 20's ratio) as a share of the
        // floor: above 100%, the target asks more than these statements reach.
        self.target_share_row(
            "drain's target",
            &format!("the floor ({workers}w)"),
            target,
            rate,
            "above what they reach",
        );
        for (statements, other) in others {
            let Some(other) = other else { continue };
            let (name, what, above) = match statements {
                Statements::Lc => continue,
                Statements::Bare => (
                    "bare floor",
                    "job-row updates alone, no history",
                    "above what durability allows",
                ),
                Statements::Outbox => (
                    "outbox floor",
                    "bare + one event row per transition, relayed by delete",
                    "above what durability with an outbox allows",
                ),
            };
            let other_rate = other["jobs_per_s"].as_f64().unwrap_or(0.0);
            self.info_row(
                format!("  {name}: {what} ({workers}w)"),
                Unit::JobsPerS,
                vec![other_rate],
            );
            let other_cpu = other["cpu_us_per_job"]["postgres"].as_f64().unwrap_or(0.0);
            self.info_row(
                format!("  {name}'s CPU per job: postgres ({workers}w)"),
                Unit::Micros,
                vec![other_cpu],
            );
            self.target_share_row(
                "drain's target",
                &format!("the {name} ({workers}w)"),
                target,
                other_rate,
                above,
            );
        }
    }
}

/// One simulated worker: claims batches of the shared `ids` into its free places (two
/// claims in flight) and records them succeeded (one write in flight), until every id
/// is taken; returns how many it recorded. Its places are the worker's (see
/// `lc_worker`'s `slots`): a claimed job takes a place among the `concurrency` running
/// handlers, free again as soon as the claim returns (a no-op handler ends as it
/// starts), and one among the `concurrency` × [`HELD_PER_SLOT`] held jobs, free again
/// when its result is committed. (Until 2026-12-08 the floor had only the first kind,
/// freed at the commit: a stricter shape than the worker's, which one-worker drains
/// then beat by up to 20%.)
async fn simulated_worker(
    store: Store,
    ids: Arc<Vec<Uuid>>,
    next: Arc<AtomicUsize>,
    concurrency: usize,
    statements: Statements,
) -> Result<usize> {
    let worker = Uuid::now_v7();
    let running = Arc::new(Semaphore::new(concurrency));
    let held = Arc::new(Semaphore::new(concurrency * HELD_PER_SLOT));
    let (claimed_tx, mut claimed_rx) = mpsc::unbounded_channel::<Vec<Claimed>>();
    let mut claimers = JoinSet::new();
    for _ in 0..CLAIMS_IN_FLIGHT {
        let (store, ids, next, running, held, claimed_tx) = (
            store.clone(),
            ids.clone(),
            next.clone(),
            running.clone(),
            held.clone(),
            claimed_tx.clone(),
        );
        claimers.spawn(async move {
            loop {
                // A place of each kind, then as many more pairs as are free, up to
                // a batch (the worker's fetch batch, 100, is cut to its concurrency).
                running.acquire().await?.forget();
                held.acquire().await?.forget();
                let mut taken = 1;
                while taken < concurrency {
                    let Ok(run) = running.try_acquire() else {
                        break;
                    };
                    let Ok(hold) = held.try_acquire() else { break };
                    run.forget();
                    hold.forget();
                    taken += 1;
                }
                let start = next.fetch_add(taken, Ordering::Relaxed);
                if start >= ids.len() {
                    return anyhow::Ok(());
                }
                let end = (start + taken).min(ids.len());
                // Places this batch does not use (the last one) go back.
                running.add_permits(taken - (end - start));
                held.add_permits(taken - (end - start));
                let jobs = claim(&store, statements, &ids[start..end], worker).await?;
                ensure!(
                    jobs.len() == end - start,
                    "claimed {} of {}",
                    jobs.len(),
                    end - start
                );
                // The no-op handlers have ended: their running places are free; their
                // held places wait for the completion's commit.
                running.add_permits(jobs.len());
                if claimed_tx.send(jobs).is_err() {
                    return Ok(());
                }
            }
        });
    }
    drop(claimed_tx);
    let mut recorded = 0;
    while let Some(first) = claimed_rx.recv().await {
        let mut batch: Vec<Claimed> = first;
        while batch.len() < MAX_COMPLETIONS {
            match claimed_rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let applied = complete(&store, statements, &batch, worker).await?;
        ensure!(
            applied == batch.len(),
            "recorded {applied} of {}",
            batch.len()
        );
        recorded += batch.len();
        held.add_permits(batch.len());
    }
    while let Some(joined) = claimers.join_next().await {
        joined??;
    }
    Ok(recorded)
}

/// [`Statements::Outbox`]'s relay: takes the oldest events in batches until `stop` is
/// set and a batch that began after it comes back short (every completion committed
/// before `stop` was set, so none is left); returns how many events it took and when it
/// finished.
async fn outbox_relay(store: Store, stop: Arc<AtomicBool>) -> Result<(usize, Instant)> {
    let client = store.client().await?;
    let statement = client.prepare_cached(OUTBOX_RELAY).await?;
    let mut relayed = 0;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let events = client.query(&statement, &[]).await?;
        relayed += events.len();
        if events.len() < OUTBOX_BATCH {
            if stopping {
                return Ok((relayed, Instant::now()));
            }
            tokio::time::sleep(OUTBOX_IDLE).await;
        }
    }
}

/// A job one simulated worker claimed: lc's claim gives the whole job, the bare
/// claim its id.
enum Claimed {
    Lc(ClaimedJob),
    Bare(Uuid),
}

/// Claims `ids` with `statements`.
async fn claim(
    store: &Store,
    statements: Statements,
    ids: &[Uuid],
    worker: Uuid,
) -> Result<Vec<Claimed>> {
    Ok(match statements.sql() {
        None => store
            .claim_by_ids(ids, worker, LEASE)
            .await?
            .into_iter()
            .map(Claimed::Lc)
            .collect(),
        Some((claim_sql, _)) => {
            let client = store.claims_client().await?;
            let ids = ids.to_vec();
            let statement = client.prepare_cached(claim_sql).await?;
            let states = vec!["queued"; ids.len()];
            let claimed = client
                .execute(&statement, &[&ids, &worker, &states])
                .await?;
            // The update returns a count, not ids: the caller checks that it claimed
            // them all, so which of them it names does not matter.
            ids.into_iter()
                .take(usize::try_from(claimed)?)
                .map(Claimed::Bare)
                .collect()
        }
    })
}

/// Records `batch` succeeded with `statements`; returns how many it recorded.
async fn complete(
    store: &Store,
    statements: Statements,
    batch: &[Claimed],
    worker: Uuid,
) -> Result<usize> {
    match statements.sql() {
        None => {
            let completions: Vec<Completion> = batch
                .iter()
                .filter_map(|claimed| match claimed {
                    Claimed::Lc(job) => Some(succeeded(job)),
                    Claimed::Bare(_) => None,
                })
                .collect();
            Ok(store.record_completions(worker, &completions).await?.len())
        }
        Some((_, complete_sql)) => {
            let ids: Vec<Uuid> = batch
                .iter()
                .map(|claimed| match claimed {
                    Claimed::Lc(job) => job.id,
                    Claimed::Bare(id) => *id,
                })
                .collect();
            let client = store.client().await?;
            let statement = client.prepare_cached(complete_sql).await?;
            let states = vec!["running"; ids.len()];
            Ok(usize::try_from(
                client
                    .execute(&statement, &[&ids, &worker, &states])
                    .await?,
            )?)
        }
    }
}

/// A claimed job's completion, succeeded at once (what a no-op handler returns).
fn succeeded(job: &ClaimedJob) -> Completion {
    Completion {
        id: job.id,
        attempt: job.attempt,
        claimed_at: job.claimed_at,
        max_attempts: job.max_attempts,
        result: RunResult::Succeeded,
        retry_delay_ms: 0,
    }
}
