//! Worker processes of the bench: spawning `lc-bench-worker` (lc-worker plus a handler-start observer) with the bench's environment,
//! waiting for it to register, stopping it, and reporting what it logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::bench::Bench;
use crate::starts::{report_starts, start_log};

pub(crate) struct WorkerProc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) log: PathBuf,
    /// Where it reports its handler starts (see `starts`).
    pub(crate) starts_log: PathBuf,
}

impl Bench {
    pub(crate) async fn spawn_worker(
        &mut self,
        role: &str,
        queues: &[String],
        extra: &[String],
    ) -> Result<WorkerProc> {
        self.worker_seq += 1;
        let name = format!("{:02}-{role}", self.worker_seq);
        let log = self.work_dir.join(format!("worker-{name}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let starts_log = start_log(&self.work_dir, &name);
        let exe = self.bin_dir.join("lc-bench-worker");
        let mut command = Command::new(&exe);
        command
            .arg("--queues")
            .arg(queues.join(","))
            .args(extra)
            .env("DATABASE_URL", &self.args.connect.database_url)
            .env("REDIS_URL", &self.args.connect.redis_url)
            .env("LC_REDIS_PREFIX", &self.args.connect.redis_prefix)
            .env("LC_ISOLATION", self.args.connect.isolation.as_arg())
            .env("LC_LOG_FORMAT", "json")
            .env("RUST_LOG", &self.args.worker_log)
            .env("LC_MACHINES_DIR", self.work_dir.join("machines"))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        // Each handler's first line: for enqueue->start from the producer's clock, and
        // for the start of a drain.
        report_starts(&mut command, &starts_log);
        if let Some(docker_machine) = self.docker_machine() {
            command.env("LC_DOCKER_MACHINE", docker_machine);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("worker exited at once"))?;
        // For scripts/bench.sh's trap: workers left behind by a killed bench.
        if let Ok(mut pids) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work_dir.join("worker.pids"))
        {
            let _ = writeln!(pids, "{pid}");
        }
        Ok(WorkerProc {
            name,
            child,
            pid,
            log,
            starts_log,
        })
    }

    /// The worker's id once it registered.
    pub(crate) async fn registered(
        &self,
        worker: &mut WorkerProc,
        timeout: Duration,
    ) -> Result<Uuid> {
        let started = Instant::now();
        loop {
            let client = self.store.client().await?;
            if let Some(row) = client
                .query_opt(
                    "SELECT id FROM workers WHERE pid = $1 AND stopped_at IS NULL ORDER BY started_at DESC LIMIT 1",
                    &[&i64::from(worker.pid)],
                )
                .await?
            {
                return Ok(row.get(0));
            }
            if let Some(status) = worker.child.try_wait()? {
                bail!(
                    "worker {} exited with {status} before registering; see {}",
                    worker.name,
                    worker.log.display()
                );
            }
            if started.elapsed() > timeout {
                bail!("worker {} did not register within {timeout:?}", worker.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after `timeout`).
    pub(crate) async fn stop_worker(
        &mut self,
        mut worker: WorkerProc,
        timeout: Duration,
    ) -> Result<()> {
        if worker.child.try_wait()?.is_none() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(worker.pid.to_string())
                .status()
                .await?;
            if !status.success() {
                eprintln!("[bench] kill -TERM {} failed", worker.pid);
            }
            match tokio::time::timeout(timeout, worker.child.wait()).await {
                Ok(status) => {
                    let status = status?;
                    if !status.success() {
                        self.note(format!("worker {} exited with {status}", worker.name));
                    }
                }
                Err(_) => {
                    self.note(format!(
                        "worker {} did not stop within {timeout:?} of SIGTERM: killed",
                        worker.name
                    ));
                    worker.child.start_kill()?;
                    let _ = worker.child.wait().await;
                }
            }
        }
        self.scan_log(&worker);
        Ok(())
    }

    /// Reports warnings and errors a worker logged.
    pub(crate) fn scan_log(&mut self, worker: &WorkerProc) {
        let Ok(text) = std::fs::read_to_string(&worker.log) else {
            return;
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines() {
            let (level, message) = match serde_json::from_str::<Value>(line) {
                Ok(value) => (
                    value["level"].as_str().unwrap_or("?").to_owned(),
                    value["message"].as_str().unwrap_or(line).to_owned(),
                ),
                Err(_) => ("TEXT".to_owned(), line.chars().take(160).collect()),
            };
            *counts.entry(format!("{level}: {message}")).or_default() += 1;
        }
        for (message, count) in counts {
            self.note(format!("worker {} logged {count}× {message}", worker.name));
        }
    }

    pub(crate) fn docker_machine(&self) -> Option<PathBuf> {
        let path = self
            .args
            .docker_machine
            .clone()
            .unwrap_or_else(|| self.repo_dir.join("tests/docker-machine/docker-machine"));
        path.exists().then_some(path)
    }
}
