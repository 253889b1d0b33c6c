//! The peer `--compare` runs beside LaunchControl: BullMQ, driven by
//! `bench/bullmq/peer.mjs` (installed, pinned, by `scripts/bench.sh --compare bullmq`).
//! Each workload is one `node peer.mjs <workload> ...` run that prints one
//! `PEER_JSON {...}` line; its stderr goes to `peer-bullmq.log` in the work directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use serde_json::Value;
use tokio::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// BullMQ on the same Redis (its own key prefix), workers as Node processes
    Bullmq,
}

pub struct Peer {
    script: PathBuf,
    install_dir: PathBuf,
    redis_url: String,
    prefix: String,
    log: PathBuf,
}

impl Peer {
    /// `script` is peer.mjs, `install_dir` holds the pinned `node_modules`.
    pub fn new(
        script: PathBuf,
        install_dir: PathBuf,
        redis_url: &str,
        redis_prefix: &str,
        work_dir: &Path,
    ) -> Result<Self> {
        if !script.is_file() {
            bail!(
                "{} missing (the BullMQ side of the bench)",
                script.display()
            );
        }
        if !install_dir
            .join("node_modules/bullmq/package.json")
            .is_file()
        {
            bail!(
                "BullMQ is not installed in {} (scripts/bench.sh --compare bullmq installs it)",
                install_dir.display()
            );
        }
        Ok(Self {
            script,
            install_dir,
            redis_url: redis_url.to_owned(),
            // Under the bench's prefix, so that scripts/bench.sh deletes it with the rest.
            prefix: format!("{redis_prefix}:bullmq"),
            log: work_dir.join("peer-bullmq.log"),
        })
    }

    pub fn name(&self) -> &'static str {
        "BullMQ"
    }

    async fn run(&self, workload: &str, args: &[String], timeout: Duration) -> Result<Value> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let mut command = Command::new("node");
        command
            .arg(&self.script)
            .arg(workload)
            .args(args)
            .arg("--redis")
            .arg(&self.redis_url)
            .arg("--prefix")
            .arg(&self.prefix)
            .arg("--bullmq-dir")
            .arg(&self.install_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().context("start node (BullMQ peer)")?;
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("BullMQ {workload} took over {timeout:?}"))??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "BullMQ {workload} exited with {}; see {}",
                output.status,
                self.log.display()
            );
        }
        let line = stdout
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("PEER_JSON "))
            .ok_or_else(|| anyhow!("BullMQ {workload} printed no PEER_JSON line"))?;
        serde_json::from_str(line).context("BullMQ's PEER_JSON line")
    }

    /// `producers` concurrent callers of `queue.add` on one Queue.
    pub async fn enqueue(&self, jobs: usize, producers: usize) -> Result<Value> {
        let args = [
            "--jobs".into(),
            jobs.to_string(),
            "--producers".into(),
            producers.to_string(),
        ];
        self.run("enqueue", &args, budget(jobs)).await
    }

    /// `addBulk` of `batch` jobs from each setting of `concurrency` tasks; the best is
    /// `jobs_per_s`.
    pub async fn bulk(&self, jobs: usize, batch: usize, concurrency: &[usize]) -> Result<Value> {
        let list = concurrency
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let args = [
            "--jobs".into(),
            jobs.to_string(),
            "--batch".into(),
            batch.to_string(),
            "--concurrency".into(),
            list,
        ];
        self.run("bulk", &args, budget(jobs * concurrency.len()))
            .await
    }

    /// `workers` Node processes × `concurrency` on a queue preloaded with `jobs`, timed
    /// as lc's drain: `jobs_per_s` from the first job's start, `jobs_per_s_from_spawn`
    /// from the fork of the worker processes.
    pub async fn drain(&self, jobs: usize, workers: usize, concurrency: usize) -> Result<Value> {
        let args = [
            "--jobs".into(),
            jobs.to_string(),
            "--workers".into(),
            workers.to_string(),
            "--concurrency".into(),
            concurrency.to_string(),
        ];
        self.run("drain", &args, budget(jobs * 2)).await
    }

    /// A producer at `rate` jobs/s for `warmup_seconds` (not measured), then `seconds`,
    /// while two worker processes run.
    pub async fn latency(
        &self,
        rate: u64,
        seconds: f64,
        warmup_seconds: f64,
        concurrency: usize,
    ) -> Result<Value> {
        let args = [
            "--rate".into(),
            rate.to_string(),
            "--seconds".into(),
            seconds.to_string(),
            "--warmup-seconds".into(),
            warmup_seconds.to_string(),
            "--workers".into(),
            "2".into(),
            "--concurrency".into(),
            concurrency.to_string(),
        ];
        self.run(
            "latency",
            &args,
            Duration::from_secs_f64(seconds + warmup_seconds) + Duration::from_secs(120),
        )
        .await
    }
}

/// Generous: a run that takes this long is broken, not slow.
fn budget(jobs: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(jobs as u64 * 5)
}
