//! The recovery section: SIGKILL a worker holding running jobs and time until a second
//! worker has finished them all.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use chrono::{DateTime, Utc};
use lc_shared::{JobKind, NewJob};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::bench::{Bench, POLL};
use crate::stats::round;

pub(crate) const TARGET_RECOVERY_S: f64 = 15.0;

impl Bench {
    /// SIGKILL a worker holding `recovery_jobs` running sleep jobs; time until a second
    /// worker finished them all.
    pub(crate) async fn recovery(&mut self) -> Result<Value> {
        let queue = "recovery".to_owned();
        self.prepare_queue(&queue).await?;
        let queues = [queue.clone()];
        let jobs = self.args.recovery_jobs;
        let settings = [
            format!("--concurrency={}", jobs.max(1)),
            "--lease=5s".to_owned(),
            "--heartbeat=1s".to_owned(),
            "--sweep-interval=500ms".to_owned(),
        ];
        let mut victim = self
            .spawn_worker("recovery-victim", &queues, &settings)
            .await?;
        let victim_id = self
            .registered(&mut victim, Duration::from_secs(20))
            .await?;
        let producer = self.producer(2).await?;
        let batch: Vec<NewJob> = (0..jobs)
            .map(|_| NewJob::new(JobKind::Sleep, json!({"ms": 3000})).with_queue(queue.as_str()))
            .collect();
        let ids: Vec<Uuid> = producer
            .enqueue_batch(&batch)
            .await?
            .iter()
            .map(|job| job.id)
            .collect();
        drop(producer);
        self.count_enqueued(&queue, jobs as u64);
        let held_after = self.wait_held(&ids, victim_id).await?;
        victim.child.start_kill()?;
        let killed = Instant::now();
        let killed_db: DateTime<Utc> = {
            let client = self.store.client().await?;
            client
                .query_one("SELECT clock_timestamp()", &[])
                .await?
                .get(0)
        };
        let _ = victim.child.wait().await;
        let mut rescuer = self
            .spawn_worker("recovery-rescuer", &queues, &settings)
            .await?;
        let rescuer_id = self
            .registered(&mut rescuer, Duration::from_secs(20))
            .await?;
        let recovered = match self.wait_recovered(&ids, killed).await {
            Ok(recovered) => recovered,
            Err(err) => {
                self.stop_worker(rescuer, Duration::from_secs(10)).await?;
                return Err(err);
            }
        };
        self.stop_worker(rescuer, Duration::from_secs(40)).await?;
        self.scan_log(&victim);
        let report = self
            .recovery_report(&ids, killed_db, rescuer_id, recovered)
            .await?;
        Ok(json!({
            "seconds": round(recovered, 3),
            "jobs": jobs,
            "job": {"kind": "sleep", "payload": {"ms": 3000}},
            "worker_settings": settings,
            "all_running_after_s": round(held_after.as_secs_f64(), 3),
            "lease_expiry_events": report.expiry_events,
            "leases_expired_s": {"first": report.first_expiry_s, "last": report.last_expiry_s},
            "last_restart_s": report.last_restart_s,
            "last_finish_s": report.last_finish_s,
            "second_attempt_succeeded": report.second_attempts,
            "verified_succeeded": report.finished_by_rescuer,
            "target": TARGET_RECOVERY_S,
            "met": recovered <= TARGET_RECOVERY_S,
        }))
    }

    /// Waits until the victim holds every job as running; returns how long that took.
    async fn wait_held(&self, ids: &[Uuid], victim_id: Uuid) -> Result<Duration> {
        let jobs = ids.len();
        let clock = Instant::now();
        loop {
            let held = self
                .query_i64(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'running' AND lease_owner = $2",
                    &[&ids, &victim_id],
                )
                .await?;
            if held == jobs as i64 {
                return Ok(clock.elapsed());
            }
            ensure!(
                clock.elapsed() < Duration::from_secs(20),
                "the victim holds only {held} of {jobs} jobs after 20s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every job succeeded; returns the seconds since `killed`.
    async fn wait_recovered(&self, ids: &[Uuid], killed: Instant) -> Result<f64> {
        let jobs = ids.len();
        let clock = Instant::now();
        loop {
            let done = self
                .query_i64(
                    "SELECT count(*) FROM jobs WHERE id = ANY($1) AND state = 'succeeded'",
                    &[&ids],
                )
                .await?;
            if done == jobs as i64 {
                return Ok(killed.elapsed().as_secs_f64());
            }
            if clock.elapsed() > Duration::from_secs(60) {
                bail!("recovery: only {done} of {jobs} jobs succeeded 60s after the SIGKILL");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Checks that the rescuer finished every job, adds the row, and reads when the
    /// leases expired and the jobs restarted.
    async fn recovery_report(
        &mut self,
        ids: &[Uuid],
        killed_db: DateTime<Utc>,
        rescuer_id: Uuid,
        recovered: f64,
    ) -> Result<Recovered> {
        let jobs = ids.len();
        let client = self.store.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'succeeded' AND attempt = 2 AND lease_owner IS NULL),
                        EXTRACT(EPOCH FROM max(started_at) - $2)::FLOAT8,
                        EXTRACT(EPOCH FROM max(finished_at) - $2)::FLOAT8
                 FROM jobs WHERE id = ANY($1)",
                &[&ids, &killed_db],
            )
            .await?;
        let second_attempts: i64 = row.get(0);
        let restarted_s: Option<f64> = row.get(1);
        let finished_s: Option<f64> = row.get(2);
        let expired = client
            .query_one(
                "SELECT count(*), EXTRACT(EPOCH FROM min(at) - $2)::FLOAT8, EXTRACT(EPOCH FROM max(at) - $2)::FLOAT8
                 FROM job_events WHERE job_id = ANY($1) AND from_state = 'running' AND to_state = 'queued'",
                &[&ids, &killed_db],
            )
            .await?;
        let finished_by_rescuer = client
            .query_one(
                "SELECT count(*) FROM job_events WHERE job_id = ANY($1) AND to_state = 'succeeded' AND worker_id = $2",
                &[&ids, &rescuer_id],
            )
            .await?
            .get::<_, i64>(0);
        ensure!(
            finished_by_rescuer == jobs as i64,
            "recovery: the second worker recorded {finished_by_rescuer} of {jobs} successes"
        );
        self.row(
            format!("recovery after SIGKILL ({jobs} running sleep 3s jobs)"),
            format!("{recovered:.2} s"),
            format!("<= {TARGET_RECOVERY_S} s"),
            Some(recovered <= TARGET_RECOVERY_S),
        );
        Ok(Recovered {
            expiry_events: expired.get(0),
            first_expiry_s: expired.get::<_, Option<f64>>(1).map(|s| round(s, 3)),
            last_expiry_s: expired.get::<_, Option<f64>>(2).map(|s| round(s, 3)),
            last_restart_s: restarted_s.map(|s| round(s, 3)),
            last_finish_s: finished_s.map(|s| round(s, 3)),
            second_attempts,
            finished_by_rescuer,
        })
    }
}

/// What the rows and events tell of a recovery; times in seconds after the SIGKILL.
struct Recovered {
    expiry_events: i64,
    first_expiry_s: Option<f64>,
    last_expiry_s: Option<f64>,
    last_restart_s: Option<f64>,
    last_finish_s: Option<f64>,
    second_attempts: i64,
    finished_by_rescuer: i64,
}
