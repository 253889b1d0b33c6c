//! The HTTP section: one job at a time through `lc serve` (`POST /v1/jobs`, keep-alive
//! connections, an admin token), from 1 and from 32 concurrent clients, beside the same
//! number of library producers in the same run. The API's added cost per job is the
//! CPU per job of everything on its path (the caller with its HTTP client, `lc serve`,
//! PostgreSQL, Redis) against the library's (the caller with the library, PostgreSQL,
//! Redis); the throughputs are printed beside it. On a 2-core machine the client and
//! the server share the cores, so the throughput ratio also counts the client's work.
//! The floor beside them is the same client and requests against a server that does
//! nothing but parse and answer (`lc-bench-http-floor`): HTTP's own cost on this stack,
//! which no API server can add less than.

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
use crate::stats::{cpu_per_job, cpu_sample, cpu_split, pg_delta, pg_stats, round};

/// One measured run of the HTTP section.
struct Measured {
    rate: f64,
    seconds: f64,
    cpu_us: Value,
    commits_per_1000: Value,
}

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
        let floor_addr = free_loopback_addr().await?;
        let mut floor = self.spawn_floor(floor_addr)?;
        let floor_base = format!("http://{floor_addr}");
        let mut result = wait_ready(&client, &floor_base).await;
        let mut runs = Vec::new();
        if result.is_ok() {
            for &clients in &self.args.single_concurrency.clone() {
                match self
                    .http_run(&client, &base, &floor_base, &token, clients)
                    .await
                {
                    Ok(run) => runs.push(run),
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
        }
        let _ = floor.start_kill();
        let _ = floor.wait().await;
        result?;
        Ok(json!({ "runs": runs }))
    }

    /// One client count: the library, `lc serve` and the floor, one after the other.
    async fn http_run(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        floor_base: &str,
        token: &str,
        clients: usize,
    ) -> Result<Value> {
        // Runs of over 5 s at 32 clients (about 25k jobs/s through the library here).
        let total = self.args.jobs * clients.clamp(1, 8);
        let library_queue = format!("http-lib-c{clients}");
        self.prepare_queue(&library_queue).await?;
        let producer = self.producer(clients).await?;
        let library = self
            .measure(total, async {
                enqueue_one_at_a_time(&producer, &library_queue, total, clients).await?;
                producer.flush_hints().await;
                Ok(())
            })
            .await?;
        drop(producer);
        self.count_enqueued(&library_queue, total as u64);

        let http_queue = format!("http-api-c{clients}");
        self.prepare_queue(&http_queue).await?;
        let http = self
            .measure(
                total,
                post_jobs(client, base, token, &http_queue, total, clients),
            )
            .await?;
        self.count_enqueued(&http_queue, total as u64);

        // The floor makes no job: nothing to count.
        let floor = self
            .measure(
                total,
                post_jobs(client, floor_base, token, "floor", total, clients),
            )
            .await?;

        let path_us = |run: &Measured, groups: &[&str]| {
            groups
                .iter()
                .map(|group| run.cpu_us[*group].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        };
        let library_cost = path_us(&library, &["lc-bench", "postgres", "redis-server"]);
        let http_cost = path_us(&http, &["lc-bench", "lc-serve", "postgres", "redis-server"]);
        let floor_cost = path_us(&floor, &["lc-bench", "http-floor"]);
        let added = http_cost / library_cost.max(f64::MIN_POSITIVE) - 1.0;
        let floor_added = floor_cost / library_cost.max(f64::MIN_POSITIVE);
        let throughput_added = library.rate / http.rate - 1.0;
        eprintln!(
            "[bench]   http c={clients}: {:.0}/s through lc serve, {:.0}/s through the library, {:.0}/s to the floor; \
             CPU per job {http_cost:.0} us vs {library_cost:.0} us, the floor {floor_cost:.0} us \
             (http {}, library {}, floor {})",
            http.rate, library.rate, floor.rate, http.cpu_us, library.cpu_us, floor.cpu_us
        );
        let (target, met) = if clients >= 32 {
            (
                format!("adds <= {:.0}%", TARGET_ADDED * 100.0),
                Some(added <= TARGET_ADDED),
            )
        } else {
            (String::new(), None)
        };
        let plural = if clients == 1 { "" } else { "s" };
        self.row(
            format!("enqueue through lc serve, {clients} client{plural}"),
            format!(
                "CPU {http_cost:.0} vs {library_cost:.0} us/job: adds {:.0}% ({:.0} vs {:.0} jobs/s: {:+.0}%)",
                added * 100.0,
                http.rate,
                library.rate,
                throughput_added * 100.0
            ),
            target,
            met,
        );
        self.row(
            format!("  HTTP alone (no queue), {clients} client{plural}"),
            format!(
                "CPU {floor_cost:.0} us/request = {:.0}% of the library's job ({:.0} requests/s)",
                floor_added * 100.0,
                floor.rate
            ),
            String::new(),
            None,
        );
        Ok(json!({
            "clients": clients,
            "jobs": total,
            "http_jobs_per_s": round(http.rate, 0),
            "library_jobs_per_s": round(library.rate, 0),
            "floor_requests_per_s": round(floor.rate, 0),
            "added_cost_per_job": round(added, 3),
            "floor_cost_over_library_cost": round(floor_added, 3),
            "added_by_throughput": round(throughput_added, 3),
            "cpu_us_per_job": {"http": http.cpu_us, "library": library.cpu_us, "floor": floor.cpu_us},
            "cpu_us_per_job_on_the_path": {"http": round(http_cost, 1), "library": round(library_cost, 1), "floor": round(floor_cost, 1)},
            "commits_per_1000_jobs": {"http": http.commits_per_1000, "library": library.commits_per_1000},
            "http_seconds": round(http.seconds, 3),
            "library_seconds": round(library.seconds, 3),
            "floor_seconds": round(floor.seconds, 3),
            "measured_as": "POST /v1/jobs one job per request over keep-alive connections, from the first request to the last answer; the library the same jobs with as many producer tasks, in the same run; added cost = CPU per job of the caller (with its HTTP client), lc serve, PostgreSQL and Redis over the library path's (caller with the library, PostgreSQL, Redis); the floor = the same client and requests against lc-bench-http-floor (axum_server, the same body parsing and answer, no middleware, no database): the least any HTTP API on this stack adds",
        }))
    }

    /// Runs `work` (`total` jobs) and measures its rate, CPU per job and commits.
    async fn measure(
        &mut self,
        total: usize,
        work: impl std::future::Future<Output = Result<()>>,
    ) -> Result<Measured> {
        let client = self.store.client().await?;
        let pg_before = pg_stats(&client).await?;
        let cpu_before = cpu_sample(&[]);
        let started = Instant::now();
        work.await?;
        let seconds = started.elapsed().as_secs_f64();
        let cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
        let pg = pg_delta(&pg_before, &pg_stats(&client).await?, total as f64, 0.0);
        Ok(Measured {
            rate: total as f64 / seconds,
            seconds,
            cpu_us: cpu_per_job(&cpu, total as f64),
            commits_per_1000: pg["commits_per_1000_jobs"].clone(),
        })
    }

    /// `lc-bench-http-floor` on `addr`.
    fn spawn_floor(&self, addr: std::net::SocketAddr) -> Result<Child> {
        Command::new(self.bin_dir.join("lc-bench-http-floor"))
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start lc-bench-http-floor")
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
