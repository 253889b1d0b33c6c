//! The HTTP section: one job at a time through `lc serve` (`POST /v1/jobs`, keep-alive
//! connections, an admin token), from 1 and from 32 concurrent clients, beside the same
//! number of library producers in the same run. The API's added cost per job is the
//! CPU per job of everything on its path (the caller with its HTTP client, `lc serve`,
//! PostgreSQL, Redis) against the library's (the caller with the library, PostgreSQL,
//! Redis); the throughputs are printed beside it. On a 2-core machine the client and
//! the server share the cores, so the throughput ratio also counts the client's work.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::bench::Bench;
use crate::enqueue::enqueue_one_at_a_time;
use crate::fleet_check::free_loopback_addr;
use crate::stats::{cpu_per_job, cpu_sample, cpu_split, round};

/// The goal at 32 clients: the API adds at most 30% to the library's cost per job.
pub(crate) const TARGET_ADDED: f64 = 0.30;

impl Bench {
    pub(crate) async fn http(&mut self) -> Result<Value> {
        let addr = free_loopback_addr().await?;
        let mut serve = self.spawn_serve(addr).await?;
        let result = self.http_runs(addr).await;
        let _ = serve.start_kill();
        let _ = serve.wait().await;
        result
    }

    async fn http_runs(&mut self, addr: std::net::SocketAddr) -> Result<Value> {
        let token = self.admin_token().await?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let base = format!("http://{addr}");
        wait_ready(&client, &base).await?;
        let mut runs = Vec::new();
        for &clients in &self.args.single_concurrency.clone() {
            let total = self.args.jobs;
            let library_queue = format!("http-lib-c{clients}");
            self.prepare_queue(&library_queue).await?;
            let producer = self.producer(clients).await?;
            let cpu_before = cpu_sample(&[]);
            let started = Instant::now();
            enqueue_one_at_a_time(&producer, &library_queue, total, clients).await?;
            producer.flush_hints().await;
            let library_s = started.elapsed().as_secs_f64();
            let library_cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
            drop(producer);
            self.count_enqueued(&library_queue, total as u64);

            let http_queue = format!("http-api-c{clients}");
            self.prepare_queue(&http_queue).await?;
            let cpu_before = cpu_sample(&[]);
            let started = Instant::now();
            post_jobs(&client, &base, &token, &http_queue, total, clients).await?;
            let http_s = started.elapsed().as_secs_f64();
            let http_cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
            self.count_enqueued(&http_queue, total as u64);

            let (library_rate, http_rate) = (total as f64 / library_s, total as f64 / http_s);
            let throughput_added = library_rate / http_rate - 1.0;
            let library_us = cpu_per_job(&library_cpu, total as f64);
            let http_us = cpu_per_job(&http_cpu, total as f64);
            let path_us = |per_job: &Value| {
                ["lc-bench", "lc-serve", "postgres", "redis-server"]
                    .iter()
                    .map(|group| per_job[*group].as_f64().unwrap_or(0.0))
                    .sum::<f64>()
            };
            let (library_cost, http_cost) = (path_us(&library_us), path_us(&http_us));
            let added = http_cost / library_cost.max(f64::MIN_POSITIVE) - 1.0;
            eprintln!(
                "[bench]   http c={clients}: {http_rate:.0}/s through lc serve, {library_rate:.0}/s through the library; \
                 CPU per job {http_cost:.0} us vs {library_cost:.0} us (http {http_us}, library {library_us})"
            );
            let (target, met) = if clients >= 32 {
                (
                    format!("adds <= {:.0}%", TARGET_ADDED * 100.0),
                    Some(added <= TARGET_ADDED),
                )
            } else {
                (String::new(), None)
            };
            self.row(
                format!(
                    "enqueue through lc serve, {clients} client{}",
                    if clients == 1 { "" } else { "s" }
                ),
                format!(
                    "CPU {http_cost:.0} vs {library_cost:.0} us/job: adds {:.0}% ({http_rate:.0} vs {library_rate:.0} jobs/s: {:+.0}%)",
                    added * 100.0,
                    throughput_added * 100.0
                ),
                target,
                met,
            );
            runs.push(json!({
                "clients": clients,
                "jobs": total,
                "http_jobs_per_s": round(http_rate, 0),
                "library_jobs_per_s": round(library_rate, 0),
                "added_cost_per_job": round(added, 3),
                "added_by_throughput": round(throughput_added, 3),
                "cpu_us_per_job": {"http": http_us, "library": library_us},
                "cpu_us_per_job_on_the_path": {"http": round(http_cost, 1), "library": round(library_cost, 1)},
                "http_seconds": round(http_s, 3),
                "library_seconds": round(library_s, 3),
                "measured_as": "POST /v1/jobs one job per request over keep-alive connections, from the first request to the last answer; the library the same jobs with as many producer tasks, in the same run; added cost = CPU per job of the caller (with its HTTP client), lc serve, PostgreSQL and Redis over the library path's (caller with the library, PostgreSQL, Redis)",
            }));
        }
        Ok(json!({ "runs": runs }))
    }

    /// `lc serve` on `addr`, without a rate limit, logging warnings only.
    async fn spawn_serve(&mut self, addr: std::net::SocketAddr) -> Result<Child> {
        let log = self.work_dir.join("serve.log");
        let file = std::fs::File::create(&log)?;
        Command::new(self.bin_dir.join("lc"))
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--rate-limit",
                "off",
            ])
            .env("DATABASE_URL", &self.args.connect.database_url)
            .env("REDIS_URL", &self.args.connect.redis_url)
            .env("LC_REDIS_PREFIX", &self.args.connect.redis_prefix)
            .env("LC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("start lc serve")
    }

    /// A fresh admin token (`lc tokens create`, which prints it once).
    async fn admin_token(&self) -> Result<String> {
        let output = Command::new(self.bin_dir.join("lc"))
            .args(["tokens", "create", "--owner", "lc-bench", "--admin"])
            .env("DATABASE_URL", &self.args.connect.database_url)
            .env("REDIS_URL", &self.args.connect.redis_url)
            .env("LC_REDIS_PREFIX", &self.args.connect.redis_prefix)
            .stdin(Stdio::null())
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "lc tokens create failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let token = String::from_utf8(output.stdout)?.trim().to_owned();
        ensure!(
            token.starts_with("lc_"),
            "lc tokens create printed no token"
        );
        Ok(token)
    }
}

/// Waits until `lc serve` answers `/readyz`.
async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("lc serve did not become ready within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `total` no-op jobs into `queue`, one per request, from `clients` tasks.
async fn post_jobs(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    queue: &str,
    total: usize,
    clients: usize,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/v1/jobs");
    let body = Arc::new(serde_json::to_vec(
        &json!({"kind": "noop", "queue": queue}),
    )?);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let answer = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await?;
                let status = answer.status();
                if status.as_u16() != 201 {
                    bail!("POST /v1/jobs answered {status}: {}", answer.text().await?);
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
