//! The enqueue sections: one job per call from one and from many producers, and bulk
//! batches from several tasks; and `preload`, which fills a queue for a drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use lc_producer::Producer;
use lc_shared::{JobKind, NewJob};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::bench::Bench;
use crate::rows::{Check, Unit, thousands};
use crate::stats::{
    best_run, cpu_per_job, cpu_sample, cpu_split, own_context_switches, percentiles, pg_delta,
    pg_stats, round,
};

pub(crate) const TARGET_SINGLE: f64 = 4_700.0;
pub(crate) const TARGET_BULK: f64 = 23_000.0;

impl Bench {
    /// One job per `Producer::enqueue` call (own transaction and hint), from
    /// `concurrency` tasks: one row per `--single-concurrency` setting.
    pub(crate) async fn single(&mut self) -> Result<Value> {
        let mut runs = Vec::new();
        for &concurrency in &self.args.single_concurrency.clone() {
            runs.push(self.single_run(concurrency).await?);
        }
        Ok(json!({ "runs": runs }))
    }

    async fn single_run(&mut self, concurrency: usize) -> Result<Value> {
        let queue = format!("single-c{concurrency}");
        self.prepare_queue(&queue).await?;
        let producer = self.producer(concurrency).await?;
        // `--jobs` per producer, at most eight times over, so that the many-producer
        // runs last seconds too (20,000 jobs by 32 producers took about one).
        let total = self.args.jobs * concurrency.clamp(1, 8);
        let stats_client = self.store.client().await?;
        let pg_before = pg_stats(&stats_client).await?;
        let cpu_before = cpu_sample(&[]);
        let switches_before = own_context_switches();
        let started = Instant::now();
        let mut latencies = enqueue_one_at_a_time(&producer, &queue, total, concurrency).await?;
        // Timed until the last hint is in Redis too, as the peer's enqueue is.
        producer.flush_hints().await;
        let elapsed = started.elapsed().as_secs_f64();
        let switches_per_job =
            own_context_switches().saturating_sub(switches_before) as f64 / total as f64;
        let cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
        let cpu_us_per_job = cpu_per_job(&cpu, total as f64);
        drop(producer);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pg = pg_delta(
            &pg_before,
            &pg_stats(&stats_client).await?,
            total as f64,
            0.0,
        );
        self.count_enqueued(&queue, total as u64);
        let rate = total as f64 / elapsed;
        let call = percentiles(&mut latencies);
        eprintln!(
            "[bench]   single c={concurrency}: {total} in {elapsed:.2}s = {rate:.0}/s, call p50 {:.2} ms, {switches_per_job:.2} context switches per job",
            call["p50"]
        );
        let cpu_figure = |group: &str| cpu_us_per_job[group].as_f64().unwrap_or(0.0);
        let cpu_values = vec![cpu_figure("postgres"), cpu_figure("lc-bench")];
        // The reference, measured right after: pgbench committing the same statement.
        // One producer: one job per commit from one connection. Many: lc's group commit
        // gathers the concurrent calls into one statement, and `concurrency` callers
        // each waiting for its answer fill at most `concurrency` jobs per commit; so the
        // references are that statement of `concurrency` jobs from one connection (one
        // statement in flight, as lc sends) and of half as many from two.
        let shapes: Vec<(usize, usize)> = if concurrency == 1 {
            vec![(1, 1)]
        } else {
            vec![(1, concurrency), (2, concurrency.div_ceil(2))]
        };
        let mut references = Vec::new();
        for (clients, jobs) in shapes {
            match self.pgbench_reference(clients, jobs).await {
                Ok(reference) => references.push(reference),
                Err(err) => self.note(format!("pgbench reference: {err:#}")),
            }
        }
        let peer = self
            .on_peer(&format!("enqueue, {concurrency} producers"), async |peer| {
                peer.enqueue(total, concurrency).await
            })
            .await;
        let peer_jobs_per_s = peer.as_ref().and_then(|peer| peer["jobs_per_s"].as_f64());
        let peer_rate = peer_jobs_per_s.map(|rate| vec![rate]);
        // Issue 20 against the peer: many producers at least 1.2x its rate (one
        // producer's target is the pgbench reference's, below). Alone, issue 5's floor
        // for many producers.
        let (target, check) = match (&peer_rate, concurrency) {
            (Some(_), 1) => (String::new(), None),
            (Some(_), _) => ("≥ 1.2x".to_owned(), Some(Check::RatioAtLeast(1.2))),
            (None, 1) => (String::new(), None),
            (None, _) => (
                format!(">= {}", thousands(TARGET_SINGLE)),
                Some(Check::AtLeast(TARGET_SINGLE)),
            ),
        };
        let met = self.figure_row(
            format!(
                "enqueue one at a time, {concurrency} producer{}",
                if concurrency == 1 { "" } else { "s" }
            ),
            Unit::JobsPerS,
            vec![rate],
            peer_rate,
            target,
            check,
        );
        self.figure_row(
            format!("  CPU per job: postgres / producer ({concurrency}p)"),
            Unit::Micros,
            cpu_values,
            None,
            "",
            None,
        );
        self.row(
            format!("  producer context switches per job ({concurrency}p)"),
            format!("{switches_per_job:.2}"),
            "",
            None,
        );
        // Many producers' target against the peer (1.2x its rate), beside the references.
        let target = peer_jobs_per_s
            .filter(|_| concurrency > 1)
            .map(|peer_rate| peer_rate * 1.2);
        self.reference_rows(concurrency, rate, &references, target);
        Ok(json!({
            "concurrency": concurrency,
            "jobs": total,
            "seconds": round(elapsed, 3),
            "jobs_per_s": round(rate, 0),
            "call_ms": call,
            "queue": queue,
            "cpu": cpu,
            "cpu_us_per_job": cpu_us_per_job,
            "producer_context_switches_per_job": round(switches_per_job, 2),
            "postgres": pg,
            "met": met,
            "peer": peer,
            "pgbench_references": references,
        }))
    }

    /// The pgbench references' rows: each one's jobs per second, the producers' share
    /// of the best (issue 20: one producer at least 90%), the best one's CPU per job,
    /// and, given a `target` rate against the peer, that target as a share of the best
    /// (above 100%, it asks more than durable commits of this statement reach).
    fn reference_rows(
        &mut self,
        concurrency: usize,
        rate: f64,
        references: &[Value],
        target: Option<f64>,
    ) {
        let jobs_per_s = |reference: &Value| reference["jobs_per_s"].as_f64().unwrap_or(0.0);
        for reference in references {
            let (clients, jobs) = (&reference["clients"], &reference["jobs_per_commit"]);
            self.figure_row(
                format!(
                    "  pgbench -M prepared -c {clients}, lc's insert of {jobs} job(s) per commit"
                ),
                Unit::JobsPerS,
                vec![jobs_per_s(reference)],
                None,
                "",
                None,
            );
        }
        let Some(best) = references
            .iter()
            .max_by(|a, b| jobs_per_s(a).total_cmp(&jobs_per_s(b)))
        else {
            return;
        };
        let (share_target, check) = if concurrency == 1 {
            ("≥ 90%", Some(Check::AtLeast(0.9)))
        } else {
            ("", None)
        };
        let best_rate = jobs_per_s(best);
        self.figure_row(
            format!("  {concurrency} producer(s) / best pgbench reference"),
            Unit::Percent,
            vec![if best_rate > 0.0 {
                rate / best_rate
            } else {
                0.0
            }],
            None,
            share_target,
            check,
        );
        let per_job = &best["cpu_us_per_job"];
        let of = |group: &str| per_job[group].as_f64().unwrap_or(0.0);
        self.figure_row(
            format!("  CPU per job: postgres / pgbench (best reference, {concurrency}p)"),
            Unit::Micros,
            vec![of("postgres"), of("pgbench")],
            None,
            "",
            None,
        );
        self.target_share_row(
            "target",
            &format!("best pgbench reference ({concurrency}p)"),
            target,
            best_rate,
            "above what they reach",
        );
    }

    /// `enqueue_batch` of `batch_size` jobs, from several concurrent tasks: the best
    /// `--bulk-concurrency` setting is the row.
    pub(crate) async fn bulk(&mut self) -> Result<Value> {
        let mut runs = Vec::new();
        let batch_size = self.args.batch_size.max(1);
        for &concurrency in &self.args.bulk_concurrency.clone() {
            runs.push(self.bulk_run(concurrency, batch_size).await?);
        }
        let best = best_run(&runs)?;
        let rate = best["jobs_per_s"].as_f64().unwrap_or(0.0);
        let concurrency = self.args.bulk_concurrency.clone();
        let total = self.args.jobs;
        let peer = self
            .on_peer("bulk enqueue", async |peer| {
                peer.bulk(total, batch_size, &concurrency).await
            })
            .await;
        let peer_rate = peer
            .as_ref()
            .map(|peer| vec![peer["jobs_per_s"].as_f64().unwrap_or(0.0)]);
        let (target, check) = match &peer_rate {
            Some(_) => ("≥ 3.0x".to_owned(), Check::RatioAtLeast(3.0)),
            None => (
                format!(">= {}", thousands(TARGET_BULK)),
                Check::AtLeast(TARGET_BULK),
            ),
        };
        // The peer's best setting may differ from lc's: see the JSON's runs.
        let met = self.figure_row(
            format!(
                "bulk enqueue (batches of {batch_size}, {} tasks)",
                best["concurrency"]
            ),
            Unit::JobsPerS,
            vec![rate],
            peer_rate,
            target,
            Some(check),
        );
        Ok(json!({
            "jobs_per_s": best["jobs_per_s"],
            "concurrency": best["concurrency"],
            "batch_size": batch_size,
            "met": met,
            "runs": runs,
            "peer": peer,
        }))
    }

    async fn bulk_run(&mut self, concurrency: usize, batch_size: usize) -> Result<Value> {
        let queue = format!("bulk-c{concurrency}");
        self.prepare_queue(&queue).await?;
        let producer = self.producer(concurrency).await?;
        let total = self.args.jobs;
        let batches = total.div_ceil(batch_size);
        // Jobs are built before the clock starts: the figure is about the queue.
        let all: Arc<Vec<Vec<NewJob>>> = Arc::new(
            (0..batches)
                .map(|batch| {
                    let size = batch_size.min(total - batch * batch_size);
                    (0..size)
                        .map(|_| NewJob::new(JobKind::Noop, json!({})).with_queue(queue.as_str()))
                        .collect()
                })
                .collect(),
        );
        let stats_client = self.store.client().await?;
        let pg_before = pg_stats(&stats_client).await?;
        let cpu_before = cpu_sample(&[]);
        let started = Instant::now();
        let mut latencies = enqueue_batches(&producer, all, concurrency).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
        drop(producer);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pg = pg_delta(
            &pg_before,
            &pg_stats(&stats_client).await?,
            total as f64,
            0.0,
        );
        self.count_enqueued(&queue, total as u64);
        let rate = total as f64 / elapsed;
        eprintln!("[bench]   bulk c={concurrency}: {total} in {elapsed:.2}s = {rate:.0}/s");
        Ok(json!({
            "concurrency": concurrency,
            "batch_size": batch_size,
            "jobs": total,
            "seconds": round(elapsed, 3),
            "jobs_per_s": round(rate, 0),
            "batch_call_ms": percentiles(&mut latencies),
            "queue": queue,
            "cpu": cpu,
            "postgres": pg,
        }))
    }

    /// Enqueues `jobs` noop jobs with hints into `queue` (no worker runs it yet).
    pub(crate) async fn preload(&mut self, queue: &str, jobs: usize) -> Result<()> {
        self.prepare_queue(queue).await?;
        let producer = self.producer(2).await?;
        let batch: Vec<NewJob> = (0..self.args.batch_size.max(1))
            .map(|_| NewJob::new(JobKind::Noop, json!({})).with_queue(queue))
            .collect();
        let mut left = jobs;
        while left > 0 {
            let take = left.min(batch.len());
            producer.enqueue_batch(&batch[..take]).await?;
            left -= take;
        }
        self.count_enqueued(queue, jobs as u64);
        Ok(())
    }
}

/// `total` noop jobs into `queue`, one per `enqueue` call, from `concurrency` tasks
/// sharing `producer`; returns each call's milliseconds.
pub(crate) async fn enqueue_one_at_a_time(
    producer: &Producer,
    queue: &str,
    total: usize,
    concurrency: usize,
) -> Result<Vec<f64>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let producer = producer.clone();
        let next = next.clone();
        let queue = queue.to_owned();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let job = NewJob::new(JobKind::Noop, json!({})).with_queue(queue.as_str());
                let call = Instant::now();
                producer.enqueue(job).await?;
                latencies.push(call.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined??);
    }
    Ok(latencies)
}

/// Every batch of `all` through `enqueue_batch`, from `concurrency` tasks sharing
/// `producer`; returns each call's milliseconds.
async fn enqueue_batches(
    producer: &Producer,
    all: Arc<Vec<Vec<NewJob>>>,
    concurrency: usize,
) -> Result<Vec<f64>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let producer = producer.clone();
        let next = next.clone();
        let all = all.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = all.get(index) else { break };
                let call = Instant::now();
                let enqueued = producer.enqueue_batch(batch).await?;
                ensure!(
                    enqueued.len() == batch.len(),
                    "batch of {} enqueued {}",
                    batch.len(),
                    enqueued.len()
                );
                latencies.push(call.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined??);
    }
    Ok(latencies)
}
