//! The fleet section's health-check cost: one `lc deploy check --wait` of a deployed
//! fleet, with the database's transactions and rows and the workers' Docker Engine API
//! calls counted around it, per machine.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::bench::Bench;
use crate::stats::{pg_delta, pg_stats, round};

impl Bench {
    /// Runs one health check of `name` (`nodes` machines) now and counts what it cost.
    /// `metrics` are the workers' metrics addresses (`--metrics-addr`).
    pub(crate) async fn fleet_check_cost(
        &mut self,
        name: &str,
        nodes: usize,
        docker_machine: &Path,
        metrics: &[SocketAddr],
    ) -> Result<Value> {
        let client = self.store.client().await?;
        let calls_before = engine_calls(metrics).await?;
        let pg_before = pg_stats(&client).await?;
        let clock = std::time::Instant::now();
        self.lc_with(
            &["deploy", "check", name, "--wait", "--timeout", "5m"],
            docker_machine,
        )
        .await?;
        let seconds = clock.elapsed().as_secs_f64();
        let pg_after = pg_stats(&client).await?;
        let calls = engine_calls(metrics).await? - calls_before;
        // Per machine: "jobs" in pg_delta's words; the two stats reads are its own.
        let pg = pg_delta(&pg_before, &pg_after, nodes as f64, 0.0);
        let per_machine = |value: f64| round(value / nodes as f64, 2);
        let commits = pg["commits"].as_f64().unwrap_or(0.0);
        self.row(
            format!("fleet of {nodes}: one health check, per machine"),
            format!(
                "{} engine calls, {} commits",
                per_machine(calls),
                per_machine(commits)
            ),
            "",
            None,
        );
        Ok(json!({
            "nodes": nodes,
            "seconds": round(seconds, 3),
            "engine_calls": calls,
            "engine_calls_per_machine": per_machine(calls),
            "commits": commits,
            "commits_per_machine": per_machine(commits),
            "database": pg,
            "measured_as": "one `lc deploy check --wait` of the deployed fleet: the workers' lc_external_calls_total{system=\"docker\"} and the database's pg_stat_database counters before and after (the workers' heartbeats and sweeps of those seconds included)",
        }))
    }
}

/// A free loopback address (for a worker's metrics endpoint, or `lc serve`).
pub(crate) async fn free_loopback_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// The Docker Engine API calls the workers made so far (their Prometheus text).
async fn engine_calls(metrics: &[SocketAddr]) -> Result<f64> {
    let mut total = 0.0;
    for addr in metrics {
        let text = scrape(*addr)
            .await
            .with_context(|| format!("scrape the worker metrics at {addr}"))?;
        total += text
            .lines()
            .filter(|line| line.starts_with("lc_external_calls_total{system=\"docker\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

/// The worker's Prometheus text (`GET /metrics`).
async fn scrape(addr: SocketAddr) -> Result<String> {
    Ok(reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}
