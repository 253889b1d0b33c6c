//! The fleet section: whole deployments of 10, 50 and 200 nodes on the docker-machine
//! stand-in, whose `create` takes a fixed time, under a provider limit L (the
//! concurrency key of the provider account, `lc queues limit`). Each is created and
//! deployed (`lc deploy create`), then torn down (`lc deploy teardown`) until nothing is
//! left, and timed against the ideal: ⌈N / L⌉ creates one after the other. The
//! largest is also checked once (`lc deploy check`) to count what a health check costs
//! (see `fleet_check`).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::process::Command;
use uuid::Uuid;

use crate::bench::Bench;
use crate::fleet_check::free_loopback_addr;
use crate::stats::round;

/// The goal at every size: at most this many times the ideal.
pub(crate) const TARGET_RATIO: f64 = 1.2;

/// The concurrency key of the fleet's provider account (driver `none`, no credentials).
const PROVIDER_KEY: &str = "machine:none";

/// How long one deployment may take to be deployed, or torn down.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

impl Bench {
    pub(crate) async fn fleet(&mut self) -> Result<Value> {
        let Some(docker_machine) = self.docker_machine() else {
            bail!("the docker-machine stand-in is missing (give --docker-machine)");
        };
        let docker_host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .context("DOCKER_HOST must name the engine that plays every machine")?;
        let limit = self.args.fleet_limit;
        let create_ms = self.args.fleet_create_delay_ms;
        self.lc(&["queues", "limit", PROVIDER_KEY, &limit.to_string()])
            .await?;
        let queue = "fleet".to_owned();
        self.prepare_queue(&queue).await?;
        // Two workers with room for every job the limit lets run, and more. The
        // deployment's later jobs (`lc deploy check`, `lc deploy teardown`) follow it to
        // this queue.
        let queues = [queue.clone()];
        let mut procs = Vec::new();
        let mut metrics = Vec::new();
        for index in 0..2 {
            let addr = free_loopback_addr().await?;
            let extra = [
                format!(
                    "--concurrency={}",
                    (limit as usize + 4).max(self.args.worker_concurrency)
                ),
                format!("--machine-env=STANDIN_CREATE_DELAY_MS={create_ms}"),
                format!("--metrics-addr={addr}"),
            ];
            let mut proc = self
                .spawn_worker(&format!("fleet-{index}"), &queues, &extra)
                .await?;
            self.registered(&mut proc, Duration::from_secs(20)).await?;
            procs.push(proc);
            metrics.push(addr);
        }
        let largest = self.args.fleet_nodes.iter().copied().max().unwrap_or(0);
        let mut runs = Vec::new();
        let mut failure = None;
        for &nodes in &self.args.fleet_nodes.clone() {
            match self
                .fleet_run(
                    &docker_machine,
                    &docker_host,
                    &queue,
                    nodes,
                    (nodes == largest).then_some(metrics.as_slice()),
                )
                .await
            {
                Ok(run) => runs.push(run),
                Err(err) => {
                    failure = Some(err.context(format!("the {nodes}-node fleet")));
                    break;
                }
            }
        }
        for proc in procs {
            self.stop_worker(proc, Duration::from_secs(40)).await?;
        }
        if let Some(err) = failure {
            return Err(err);
        }
        let floors = match runs.iter().find(|run| run["nodes"] == largest) {
            Some(run) => {
                let run = run.clone();
                self.fleet_floors(&docker_machine, &docker_host, largest, &run)
                    .await?
            }
            None => Value::Null,
        };
        Ok(json!({
            "floors": floors,
            "limit": limit,
            "create_delay_ms": create_ms,
            "ideal": "ceil(nodes / limit) x the create time: the creates one batch after the other, nothing else",
            "runs": runs,
        }))
    }

    /// One deployment of `nodes` machines: created and deployed, then torn down.
    async fn fleet_run(
        &mut self,
        docker_machine: &Path,
        docker_host: &str,
        queue: &str,
        nodes: usize,
        check_cost: Option<&[std::net::SocketAddr]>,
    ) -> Result<Value> {
        let limit = self.args.fleet_limit;
        let create_s = self.args.fleet_create_delay_ms as f64 / 1000.0;
        let ideal_s = nodes.div_ceil(limit as usize) as f64 * create_s;
        let name = spec_name(&format!("{}-f{nodes}", self.args.connect.redis_prefix));
        let spec_path = self.work_dir.join(format!("fleet-{nodes}.json"));
        std::fs::write(
            &spec_path,
            serde_json::to_vec_pretty(&fleet_spec(&name, nodes, docker_host))?,
        )?;
        eprintln!("[bench]    {nodes} nodes: create and deploy");
        let started_at = Utc::now();
        let clock = Instant::now();
        let spec = spec_path.display().to_string();
        self.lc_with(
            &["deploy", "create", &spec, "--queue", queue],
            docker_machine,
        )
        .await?;
        let client = self.store.client().await?;
        let deployment: Uuid = client
            .query_one("SELECT id FROM deployments WHERE name = $1", &[&name])
            .await
            .context("the deployment row")?
            .get(0);
        let state = wait_state(
            &client,
            deployment,
            |state| ["deployed", "failed"].contains(&state),
            PHASE_TIMEOUT,
            clock,
        )
        .await?;
        ensure!(state == "deployed", "the deployment ended {state}");
        let deployed_at = event_at(&client, deployment, "deployed").await?;
        let create_s_measured = (deployed_at - started_at).as_seconds_f64();
        let running = self.running_containers(deployment).await?;
        ensure!(
            running == nodes,
            "{running} of {nodes} containers run once deployed"
        );
        let phases = phases(&client, deployment, started_at).await?;
        let most_at_once = most_creates_at_once(&client, deployment).await?;
        ensure!(
            most_at_once <= i64::from(limit),
            "{most_at_once} creates ran at once under limit {limit}"
        );

        let check = match check_cost {
            Some(metrics) => {
                eprintln!("[bench]    {nodes} nodes: one health check");
                self.fleet_check_cost(&name, nodes, docker_machine, metrics)
                    .await?
            }
            None => Value::Null,
        };

        eprintln!("[bench]    {nodes} nodes: teardown");
        let teardown_started = Utc::now();
        let clock = Instant::now();
        self.lc_with(&["deploy", "teardown", &name], docker_machine)
            .await?;
        let state = wait_state(
            &client,
            deployment,
            |state| ["torn_down", "leftovers"].contains(&state),
            PHASE_TIMEOUT,
            clock,
        )
        .await?;
        ensure!(state == "torn_down", "the teardown ended {state}");
        let torn_down_at = event_at(&client, deployment, "torn_down").await?;
        let teardown_s = (torn_down_at - teardown_started).as_seconds_f64();
        let machines_left: i64 = client
            .query_one(
                "SELECT count(*) FROM machines WHERE deployment_id = $1 AND state <> 'removed'",
                &[&deployment],
            )
            .await?
            .get(0);
        let containers_left = self.all_containers(deployment).await?;
        ensure!(
            machines_left == 0 && containers_left == 0,
            "left after teardown: {machines_left} machines, {containers_left} containers"
        );
        let unfinished = fleet_jobs_not_done(&client, deployment).await?;
        ensure!(
            unfinished.is_empty(),
            "jobs of the deployment that did not end well: {}",
            unfinished.join(", ")
        );
        let ratio = create_s_measured / ideal_s;
        self.row(
            format!("fleet of {nodes}: create -> deployed (L={limit}, create {create_s} s)"),
            format!("{create_s_measured:.1} s = {ratio:.2}x ideal {ideal_s:.0} s"),
            format!("<= {TARGET_RATIO}x ideal"),
            Some(ratio <= TARGET_RATIO),
        );
        self.row(
            format!("fleet of {nodes}: teardown -> nothing left"),
            format!("{teardown_s:.1} s"),
            "",
            None,
        );
        Ok(json!({
            "nodes": nodes,
            "ideal_s": round(ideal_s, 3),
            "create_to_deployed_s": round(create_s_measured, 3),
            "ratio_to_ideal": round(ratio, 3),
            "measured_as": "from the start of `lc deploy create` to the deployment's 'deployed' event; teardown from the start of `lc deploy teardown` to its 'torn_down' event",
            "teardown_to_nothing_left_s": round(teardown_s, 3),
            "most_creates_at_once": most_at_once,
            "phases_s": phases,
            "containers_running_when_deployed": running,
            "health_check": check,
        }))
    }

    /// Runs `lc ARGS` against the bench's database and Redis; fails with its stderr.
    async fn lc(&self, args: &[&str]) -> Result<()> {
        let docker_machine = self.docker_machine().unwrap_or_default();
        self.lc_with(args, &docker_machine).await
    }

    pub(crate) async fn lc_with(&self, args: &[&str], docker_machine: &Path) -> Result<()> {
        let output = Command::new(self.bin_dir.join("lc"))
            .args(args)
            .env("DATABASE_URL", &self.args.connect.database_url)
            .env("REDIS_URL", &self.args.connect.redis_url)
            .env("LC_REDIS_PREFIX", &self.args.connect.redis_prefix)
            .env("LC_DOCKER_MACHINE", docker_machine)
            .env("LC_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await?;
        ensure!(
            output.status.success(),
            "lc {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(())
    }

    async fn running_containers(&self, deployment: Uuid) -> Result<usize> {
        docker_ps(deployment, &["--filter", "status=running"]).await
    }

    async fn all_containers(&self, deployment: Uuid) -> Result<usize> {
        docker_ps(deployment, &["--all"]).await
    }
}

/// Containers of the deployment (by its label) on the engine that plays every machine.
async fn docker_ps(deployment: Uuid, extra: &[&str]) -> Result<usize> {
    let output = Command::new("docker")
        .args(["ps", "--quiet", "--filter"])
        .arg(format!("label=lc.deployment={deployment}"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .await
        .context("run the docker CLI")?;
    ensure!(
        output.status.success(),
        "docker ps failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).lines().count())
}

/// Polls the deployment until `done` says yes to its state (at most `timeout` from
/// `clock`); returns that state.
pub(crate) async fn wait_state(
    client: &deadpool_postgres::Object,
    deployment: Uuid,
    done: impl Fn(&str) -> bool,
    timeout: Duration,
    clock: Instant,
) -> Result<String> {
    loop {
        let state: String = client
            .query_one(
                "SELECT state FROM deployments WHERE id = $1",
                &[&deployment],
            )
            .await?
            .get(0);
        if done(&state) {
            return Ok(state);
        }
        ensure!(
            clock.elapsed() < timeout,
            "the deployment is still {state} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When the deployment last reached `state` (its history, written in the transaction
/// of the change).
async fn event_at(
    client: &deadpool_postgres::Object,
    deployment: Uuid,
    state: &str,
) -> Result<DateTime<Utc>> {
    let at: Option<DateTime<Utc>> = client
        .query_one(
            "SELECT max(at) FROM deployment_events WHERE deployment_id = $1 AND to_state = $2",
            &[&deployment, &state],
        )
        .await?
        .get(0);
    at.with_context(|| format!("no '{state}' event in the deployment's history"))
}

/// Where a create's time went, in seconds: until the deployment was provisioned, then
/// the deploy; and how long one machine's job took (create plus its short calls), the
/// mean and the longest, against the stand-in's create delay.
async fn phases(
    client: &deadpool_postgres::Object,
    deployment: Uuid,
    started_at: DateTime<Utc>,
) -> Result<Value> {
    let row = client
        .query_one(
            "SELECT (SELECT max(at) FROM deployment_events WHERE deployment_id = $1 AND to_state = 'provisioned'),
                    (SELECT max(at) FROM deployment_events WHERE deployment_id = $1 AND to_state = 'deployed'),
                    avg(extract(epoch FROM finished_at - started_at))::float8,
                    max(extract(epoch FROM finished_at - started_at))::float8
               FROM jobs WHERE group_id = $1 AND kind = 'provision_machine'",
            &[&deployment],
        )
        .await?;
    let provisioned: Option<DateTime<Utc>> = row.get(0);
    let deployed: Option<DateTime<Utc>> = row.get(1);
    let since =
        |at: Option<DateTime<Utc>>| at.map(|at| round((at - started_at).as_seconds_f64(), 3));
    Ok(json!({
        "provisioned": since(provisioned),
        "deploy": provisioned.zip(deployed).map(|(from, to)| round((to - from).as_seconds_f64(), 3)),
        "machine_job_mean": row.get::<_, Option<f64>>(2).map(|s| round(s, 3)),
        "machine_job_max": row.get::<_, Option<f64>>(3).map(|s| round(s, 3)),
    }))
}

/// The most `provision_machine` jobs of the deployment that ran at one instant (from
/// their start and finish times): the limit held if this is at most L.
async fn most_creates_at_once(client: &deadpool_postgres::Object, deployment: Uuid) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT coalesce(max(running), 0)::bigint FROM (
                 SELECT sum(step) OVER (ORDER BY at, step) AS running FROM (
                     SELECT started_at AS at, 1 AS step FROM jobs
                      WHERE group_id = $1 AND kind = 'provision_machine' AND started_at IS NOT NULL
                     UNION ALL
                     SELECT finished_at, -1 FROM jobs
                      WHERE group_id = $1 AND kind = 'provision_machine' AND finished_at IS NOT NULL
                 ) AS steps
             ) AS running_counts",
            &[&deployment],
        )
        .await?;
    Ok(row.get(0))
}

/// A deployment name (`^[a-z][a-z0-9-]{0,40}$`) unique to this run.
pub(crate) fn spec_name(prefix: &str) -> String {
    let mut name = format!(
        "bench-{}",
        prefix
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    name.truncate(41);
    name.trim_end_matches('-').to_owned()
}

/// The deployment's jobs that did not succeed, but for those its teardown cancels by
/// design (the provisioning watchdog and the waiting health check).
async fn fleet_jobs_not_done(
    client: &deadpool_postgres::Object,
    deployment: Uuid,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT kind, state, count(*) FROM jobs WHERE group_id = $1
                AND state <> 'succeeded'
                AND NOT (state = 'cancelled' AND kind IN ('provision', 'health_check'))
              GROUP BY kind, state ORDER BY kind, state",
            &[&deployment],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let (kind, state, count): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
            format!("{count} {kind} {state}")
        })
        .collect())
}

/// `nodes` machines of docker-machine's `none` driver, each registering the bench's
/// own engine, with one small container each.
fn fleet_spec(name: &str, nodes: usize, docker_host: &str) -> Value {
    json!({
        "name": name,
        "owner": "lc-bench",
        "nodes": nodes,
        "provider": {
            "kind": "docker-machine",
            "driver": "none",
            "driver_flags": {"url": docker_host},
        },
        "payload": {
            "image": "lc-busybox:latest",
            "command": ["sleep", "3600"],
            "network_mode": "none",
            "pull": "never",
        },
        "timeouts": {"machine": "1m", "stop": "1s"},
    })
}
