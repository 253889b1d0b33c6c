//! The end of a run: the jobs no section drained are run, then every job the bench
//! enqueued is checked to have ended `succeeded` with its events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use crate::bench::Bench;
use crate::stats::round;

impl Bench {
    /// Runs the remaining queues' jobs (those of enqueue measurements that no drain took)
    /// so that every job the bench made is checked to succeed.
    pub(crate) async fn finish_leftovers(&mut self) -> Result<Value> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT queue, count(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY queue ORDER BY queue",
                &[],
            )
            .await?;
        let leftovers: Vec<(String, i64)> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        if leftovers.is_empty() {
            return Ok(json!({"jobs": 0}));
        }
        let queues: Vec<String> = leftovers.iter().map(|(queue, _)| queue.clone()).collect();
        let jobs: i64 = leftovers.iter().map(|(_, count)| count).sum();
        eprintln!(
            "[bench] running the {jobs} jobs left in {} so that every job is checked",
            queues.join(",")
        );
        let extra = [format!("--concurrency={}", self.args.worker_concurrency)];
        let mut procs = Vec::new();
        for index in 0..2 {
            procs.push(
                self.spawn_worker(&format!("leftovers-{index}"), &queues, &extra)
                    .await?,
            );
        }
        let clock = Instant::now();
        let waited = self
            .wait_finished(
                &queues,
                Duration::from_secs(60) + Duration::from_millis(jobs as u64 * 2),
            )
            .await;
        let seconds = clock.elapsed().as_secs_f64();
        for proc in procs {
            self.stop_worker(proc, Duration::from_secs(40)).await?;
        }
        waited?;
        Ok(
            json!({"jobs": jobs, "queues": queues, "seconds": round(seconds, 3),
                  "jobs_per_s_2_workers": round(jobs as f64 / seconds, 0)}),
        )
    }

    /// Every job the bench enqueued ended `succeeded`, with its history.
    pub(crate) async fn verify(&mut self) -> Result<Value> {
        let client = self.store.client().await?;
        let rows = client
            .query(
                "SELECT queue, count(*), count(*) FILTER (WHERE state = 'succeeded'),
                        count(*) FILTER (WHERE attempt > 1)
                 FROM jobs WHERE kind IN ('noop', 'sleep') GROUP BY queue ORDER BY queue",
                &[],
            )
            .await?;
        let mut per_queue = serde_json::Map::new();
        let mut problems = Vec::new();
        let mut found: HashMap<String, (i64, i64, i64)> = HashMap::new();
        for row in &rows {
            found.insert(row.get(0), (row.get(1), row.get(2), row.get(3)));
        }
        let mut expected_total = 0i64;
        let mut succeeded_total = 0i64;
        let mut queues: HashSet<&String> = self.enqueued.keys().collect();
        queues.extend(found.keys());
        let mut queues: Vec<&String> = queues.into_iter().collect();
        queues.sort();
        for queue in queues {
            let expected = self.enqueued.get(queue).copied().unwrap_or(0) as i64;
            let (total, succeeded, retried) = found.get(queue).copied().unwrap_or((0, 0, 0));
            expected_total += expected;
            succeeded_total += succeeded;
            if total != expected || succeeded != expected {
                problems.push(format!(
                    "queue {queue}: enqueued {expected}, found {total}, succeeded {succeeded}"
                ));
            }
            // Only the recovery jobs may run twice (their first worker was killed).
            if retried > 0 && queue != "recovery" {
                problems.push(format!("queue {queue}: {retried} jobs ran more than once"));
            }
            per_queue.insert(
                queue.clone(),
                json!({"enqueued": expected, "found": total, "succeeded": succeeded, "attempt_gt_1": retried}),
            );
        }
        let row = client
            .query_one(
                "SELECT count(*) FROM jobs j WHERE j.kind IN ('noop', 'sleep') AND NOT EXISTS
                    (SELECT 1 FROM job_events e WHERE e.job_id = j.id AND e.to_state = 'succeeded')",
                &[],
            )
            .await?;
        let without_event: i64 = row.get(0);
        if without_event > 0 {
            problems.push(format!("{without_event} jobs have no 'succeeded' event"));
        }
        let events: i64 = client
            .query_one("SELECT count(*) FROM job_events", &[])
            .await?
            .get(0);
        let other_states: Vec<(String, String, i64)> = client
            .query(
                // The fleet section checks its deployments' jobs itself: their teardown
                // cancels the waiting watchdog and health check, by design.
                "SELECT kind, state, count(*) FROM jobs WHERE kind NOT IN ('noop', 'sleep') AND queue <> 'fleet' GROUP BY kind, state ORDER BY kind, state",
                &[],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        for (kind, state, count) in &other_states {
            if state != "succeeded" {
                problems.push(format!("{count} {kind} jobs ended {state}"));
            }
        }
        let ok = problems.is_empty();
        self.row(
            "every enqueued job succeeded (with its event)",
            format!("{succeeded_total} of {expected_total}"),
            "all",
            Some(ok && succeeded_total == expected_total),
        );
        for problem in &problems {
            self.note(format!("verification: {problem}"));
        }
        Ok(json!({
            "ok": ok,
            "enqueued": expected_total,
            "succeeded": succeeded_total,
            "events": events,
            "jobs_without_succeeded_event": without_event,
            "queues": per_queue,
            "other_jobs": other_states.iter().map(|(kind, state, count)| json!({"kind": kind, "state": state, "count": count})).collect::<Vec<_>>(),
            "problems": problems,
        }))
    }
}
