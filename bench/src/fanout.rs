//! The fan-out section: `lc deploy create SPEC --no-deploy` of a docker-machine
//! deployment whose stand-in `create` takes a fixed time, timed until it is provisioned.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

use crate::bench::Bench;
use crate::fleet::{spec_name, wait_state};
use crate::stats::{cpu_sample, cpu_split, round};

pub(crate) const TARGET_PROVISION_S: f64 = 2.6;

impl Bench {
    pub(crate) async fn fanout(&mut self) -> Result<Value> {
        let lc = self.bin_dir.join("lc");
        let help = Command::new(&lc)
            .args(["deploy", "create", "--help"])
            .stdin(Stdio::null())
            .output()
            .await;
        let available = matches!(&help, Ok(output) if output.status.success()
            && String::from_utf8_lossy(&output.stdout).contains("--no-deploy"));
        if !available {
            self.row(
                format!(
                    "provision {} machines (create {} ms)",
                    self.args.fanout_machines, self.args.fanout_create_delay_ms
                ),
                "not measured",
                format!("<= {TARGET_PROVISION_S} s"),
                None,
            );
            self.note("fan-out: not measured (deploy commands not available)");
            return Ok(Value::Null);
        }
        self.fanout_measure().await
    }

    /// `lc deploy create SPEC --no-deploy` of a docker-machine deployment whose
    /// stand-in `create` takes a fixed time, two workers running.
    pub(crate) async fn fanout_measure(&mut self) -> Result<Value> {
        let machines = self.args.fanout_machines;
        let Some(docker_machine) = self.docker_machine() else {
            bail!("the docker-machine stand-in is missing (give --docker-machine)");
        };
        let queue = "fanout".to_owned();
        self.prepare_queue(&queue).await?;
        let name = spec_name(&self.args.connect.redis_prefix);
        let spec_path = self.work_dir.join("fanout-spec.json");
        std::fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&fanout_spec(&name, machines))?,
        )?;
        // Two worker processes with room for every machine job at once. A short lease
        // only so that the provisioning watchdog (which runs every lease period) ends
        // soon after the deployment is provisioned.
        let queues = [queue.clone()];
        let extra = [
            format!(
                "--concurrency={}",
                (machines + 2).max(self.args.worker_concurrency)
            ),
            "--lease=5s".to_owned(),
            "--heartbeat=1s".to_owned(),
            // The worker passes docker-machine only the environment it is told to.
            format!(
                "--machine-env=STANDIN_CREATE_DELAY_MS={}",
                self.args.fanout_create_delay_ms
            ),
        ];
        let mut procs = Vec::new();
        for index in 0..2 {
            let mut proc = self
                .spawn_worker(&format!("fanout-{index}"), &queues, &extra)
                .await?;
            self.registered(&mut proc, Duration::from_secs(20)).await?;
            procs.push(proc);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu_before = cpu_sample(&[]);
        let result = self
            .fanout_run(&spec_path, &docker_machine, &name, &queue, machines)
            .await;
        let pids: Vec<u32> = procs.iter().map(|proc| proc.pid).collect();
        let cpu = cpu_split(&cpu_before, &cpu_sample(&pids), self.clk_tck);
        // The deployment's remaining jobs (the watchdog) end before the workers stop.
        let settled = self.wait_finished(&queues, Duration::from_secs(30)).await;
        for proc in procs {
            self.stop_worker(proc, Duration::from_secs(40)).await?;
        }
        let mut value = result?;
        settled?;
        let client = self.store.client().await?;
        let states: Vec<(String, String, i64)> = client
            .query(
                "SELECT kind, state, count(*) FROM jobs WHERE queue = $1 GROUP BY kind, state ORDER BY kind, state",
                &[&queue],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let failed: Vec<String> = states
            .iter()
            .filter(|(_, state, _)| state != "succeeded")
            .map(|(kind, state, count)| format!("{count} {kind} {state}"))
            .collect();
        ensure!(
            failed.is_empty(),
            "deployment jobs did not all succeed: {}",
            failed.join(", ")
        );
        value["jobs"] = json!(
            states
                .iter()
                .map(|(kind, state, count)| json!({"kind": kind, "state": state, "count": count}))
                .collect::<Vec<_>>()
        );
        value["worker_settings"] = json!(extra);
        value["cpu"] = cpu;
        let seconds = value["seconds"].as_f64().unwrap_or(f64::INFINITY);
        self.row(
            format!(
                "provision {machines} machines (create {} ms each)",
                self.args.fanout_create_delay_ms
            ),
            format!("{seconds:.2} s"),
            format!("<= {TARGET_PROVISION_S} s"),
            Some(seconds <= TARGET_PROVISION_S),
        );
        Ok(value)
    }

    pub(crate) async fn fanout_run(
        &mut self,
        spec_path: &Path,
        docker_machine: &Path,
        name: &str,
        queue: &str,
        machines: usize,
    ) -> Result<Value> {
        let lc = self.bin_dir.join("lc");
        let started_at = Utc::now();
        let clock = Instant::now();
        let output = Command::new(&lc)
            .args(["deploy", "create"])
            .arg(spec_path)
            .args(["--no-deploy", "--queue", queue])
            .env("DATABASE_URL", &self.args.connect.database_url)
            .env("REDIS_URL", &self.args.connect.redis_url)
            .env("LC_REDIS_PREFIX", &self.args.connect.redis_prefix)
            .env("LC_DOCKER_MACHINE", docker_machine)
            .env("LC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await?;
        let command_s = clock.elapsed().as_secs_f64();
        ensure!(
            output.status.success(),
            "lc deploy create failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let client = self.store.client().await?;
        let deployment: Uuid = client
            .query_one("SELECT id FROM deployments WHERE name = $1", &[&name])
            .await
            .context("the deployment row")?
            .get(0);
        let state = wait_state(
            &client,
            deployment,
            |state| state != "provisioning",
            Duration::from_secs(60),
            clock,
        )
        .await?;
        let observed_s = clock.elapsed().as_secs_f64();
        ensure!(
            state == "provisioned",
            "deployment ended {state}, not provisioned"
        );
        let ready: i64 = client
            .query_one(
                "SELECT count(*) FROM machines WHERE deployment_id = $1 AND state = 'ready'",
                &[&deployment],
            )
            .await?
            .get(0);
        ensure!(
            ready == machines as i64,
            "{ready} of {machines} machines ready"
        );
        let provisioned_at: Option<DateTime<Utc>> = client
            .query_one(
                "SELECT min(at) FROM deployment_events WHERE deployment_id = $1 AND to_state = 'provisioned'",
                &[&deployment],
            )
            .await?
            .get(0);
        let seconds = provisioned_at
            .map(|at| (at - started_at).as_seconds_f64())
            .unwrap_or(observed_s);
        Ok(json!({
            "machines": machines,
            "create_delay_ms": self.args.fanout_create_delay_ms,
            "seconds": round(seconds, 3),
            "measured_as": "from the start of `lc deploy create --no-deploy` to the deployment's 'provisioned' event",
            "observed_provisioned_s": round(observed_s, 3),
            "lc_command_s": round(command_s, 3),
            "timeline_s": timeline(&client, deployment, started_at, provisioned_at).await?,
            "machines_ready": ready,
            "target": TARGET_PROVISION_S,
            "met": seconds <= TARGET_PROVISION_S,
        }))
    }
}

/// When each step happened, in seconds after `lc deploy create` started (database time
/// and this process's clock are the same machine's clock).
async fn timeline(
    client: &deadpool_postgres::Object,
    deployment: Uuid,
    started_at: DateTime<Utc>,
    provisioned_at: Option<DateTime<Utc>>,
) -> Result<Value> {
    let since =
        |at: Option<DateTime<Utc>>| at.map(|at| round((at - started_at).as_seconds_f64(), 3));
    let row = client
        .query_one(
            "SELECT min(created_at) FILTER (WHERE kind = 'provision'),
                    min(started_at) FILTER (WHERE kind = 'provision'),
                    min(created_at) FILTER (WHERE kind = 'provision_machine'),
                    min(started_at) FILTER (WHERE kind = 'provision_machine'),
                    max(started_at) FILTER (WHERE kind = 'provision_machine'),
                    max(finished_at) FILTER (WHERE kind = 'provision_machine')
             FROM jobs WHERE group_id = $1",
            &[&deployment],
        )
        .await?;
    Ok(json!({
        "provision_job_created": since(row.get(0)),
        "provision_job_started": since(row.get(1)),
        "machine_jobs_created": since(row.get(2)),
        "first_machine_job_started": since(row.get(3)),
        "last_machine_job_started": since(row.get(4)),
        "last_machine_job_finished": since(row.get(5)),
        "provisioned": since(provisioned_at),
    }))
}

/// `machines` nodes made by docker-machine's `none` driver, which only registers an
/// engine URL (nothing connects to it: the bench provisions without deploying).
pub(crate) fn fanout_spec(name: &str, machines: usize) -> Value {
    json!({
        "name": name,
        "owner": "lc-bench",
        "nodes": machines,
        "provider": {
            "kind": "docker-machine",
            "driver": "none",
            "driver_flags": {"url": "tcp://127.0.0.1:2376"},
        },
        "payload": {"image": "lc-busybox:latest", "network_mode": "none"},
        "timeouts": {"machine": "1m"},
    })
}
