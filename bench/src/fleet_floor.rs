//! The fleet section's floors: what this machine's provider and engine take for a
//! fleet with lc out of the way, so that a ratio to the ideal can be read against them.
//! On this machine the "cloud" is the docker-machine stand-in (a Python process per
//! call, making real certificates with openssl) and every "machine" is the one local
//! `dockerd`, all on the same cores as lc; on a real fleet the creates run at the
//! provider and each machine is its own engine.
//!
//! - provider: N stand-in `create`s (the create delay included), L at a time, the way
//!   the concurrency key lets lc run them, then N `rm -y`s L at a time;
//! - engine: N containers like the deployment's (same image, command, `init`, network
//!   `none`) created and started through the Engine API, as many at once as `deploy`
//!   runs, then stopped and removed.
//!
//! Each is the least lc's own phase makes of the same calls (lc adds a few short
//! docker-machine queries and engine reads per machine).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::Semaphore;

use lc_deployment::runtime::DeploymentTls;
use lc_deployment::runtime::machine_store::ScratchStore;

use crate::bench::Bench;
use crate::stats::round;

impl Bench {
    /// The floors of a `nodes`-node fleet, printed beside lc's run of that size.
    pub(crate) async fn fleet_floors(
        &mut self,
        docker_machine: &Path,
        docker_host: &str,
        nodes: usize,
        run: &Value,
    ) -> Result<Value> {
        let limit = self.args.fleet_limit as usize;
        let create_ms = self.args.fleet_create_delay_ms;
        let parallel = lc_deployment::kinds::PARALLEL_MACHINES;
        eprintln!("[bench]    {nodes} nodes: the provider's and the engine's floors");
        let provider = provider(docker_machine, docker_host, nodes, limit, create_ms).await?;
        let engine = engine(docker_host, nodes, parallel).await?;
        let ideal_s = run["ideal_s"].as_f64().unwrap_or(f64::NAN);
        let lc_s = run["create_to_deployed_s"].as_f64().unwrap_or(f64::NAN);
        let teardown_s = run["teardown_to_nothing_left_s"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let floor_s = provider.make_s + engine.make_s;
        let floor_teardown_s = provider.remove_s + engine.remove_s;
        self.row(
            format!("fleet of {nodes}: floor on this machine, create -> deployed"),
            format!(
                "{floor_s:.1} s = {:.2}x ideal (stand-in creates {:.1} s + engine {:.1} s); lc {:.2}x the floor",
                floor_s / ideal_s,
                provider.make_s,
                engine.make_s,
                lc_s / floor_s
            ),
            "",
            None,
        );
        self.row(
            format!("fleet of {nodes}: floor on this machine, teardown"),
            format!(
                "{floor_teardown_s:.1} s (stand-in rm {:.1} s + engine {:.1} s); lc {:.2}x the floor",
                provider.remove_s,
                engine.remove_s,
                teardown_s / floor_teardown_s
            ),
            "",
            None,
        );
        Ok(json!({
            "nodes": nodes,
            "provider_create_s": round(provider.make_s, 3),
            "provider_rm_s": round(provider.remove_s, 3),
            "engine_start_s": round(engine.make_s, 3),
            "engine_remove_s": round(engine.remove_s, 3),
            "floor_create_to_deployed_s": round(floor_s, 3),
            "floor_over_ideal": round(floor_s / ideal_s, 3),
            "lc_over_floor": round(lc_s / floor_s, 3),
            "floor_teardown_s": round(floor_teardown_s, 3),
            "lc_teardown_over_floor": round(teardown_s / floor_teardown_s, 3),
            "measured_as": format!("lc out of the way: {nodes} stand-in creates (delay {create_ms} ms) {limit} at a time, then {nodes} containers like the fleet's created and started {parallel} at a time through the Engine API; teardown: the rm's {limit} at a time, then the containers stopped and removed {parallel} at a time"),
        }))
    }
}

/// Seconds taken by the two halves of a floor: making and removing.
pub(crate) struct Floor {
    pub(crate) make_s: f64,
    pub(crate) remove_s: f64,
}

/// `nodes` stand-in machines created, then removed, `limit` at a time, in a scratch
/// store.
pub(crate) async fn provider(
    docker_machine: &Path,
    docker_host: &str,
    nodes: usize,
    limit: usize,
    create_ms: u64,
) -> Result<Floor> {
    // The store gets the certificates before any create and every call names them, as
    // lc's provision step does: parallel first creates in a fresh store would each
    // generate a CA and overwrite each other's (the real docker-machine's race, which
    // the stand-in keeps: "private key does not match public key").
    let parent = tempfile::tempdir().context("a scratch docker-machine store")?;
    let tls = DeploymentTls::generate("bench-floor").context("the floor's certificates")?;
    let store = ScratchStore::create(parent.path(), &tls).context("the floor's store")?;
    let store_path = store.path().to_path_buf();
    let tls_flags = store.tls_flags();
    let run = |args: Vec<String>| {
        let mut command = Command::new(docker_machine);
        command
            .args(&tls_flags)
            .args(&args)
            .env("MACHINE_STORAGE_PATH", &store_path)
            .env("MACHINE_BUGSNAG_API_TOKEN", "no-report")
            .env("STANDIN_CREATE_DELAY_MS", create_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        async move {
            let output = command.output().await.context("run the stand-in")?;
            ensure!(
                output.status.success(),
                "docker-machine {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            anyhow::Ok(())
        }
    };
    let names: Vec<String> = (1..=nodes).map(|node| format!("floor-{node}")).collect();
    let started = Instant::now();
    at_most(
        limit,
        names.iter().map(|name| {
            run(vec![
                "create".into(),
                "--driver".into(),
                "none".into(),
                format!("--url={docker_host}"),
                name.clone(),
            ])
        }),
    )
    .await?;
    let make_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    at_most(
        limit,
        names
            .iter()
            .map(|name| run(vec!["rm".into(), "-y".into(), name.clone()])),
    )
    .await?;
    Ok(Floor {
        make_s,
        remove_s: started.elapsed().as_secs_f64(),
    })
}

/// `nodes` containers like the fleet's made and started on the engine at
/// `docker_host` (a unix socket), `parallel` at a time, then stopped and removed.
pub(crate) async fn engine(docker_host: &str, nodes: usize, parallel: usize) -> Result<Floor> {
    let socket = docker_host
        .strip_prefix("unix://")
        .context("the engine floor needs DOCKER_HOST=unix://...")?;
    let docker = Docker::connect_with_socket(socket, 120, API_DEFAULT_VERSION)?;
    let names: Vec<String> = (1..=nodes)
        .map(|node| format!("lc-bench-floor-{}-{node}", std::process::id()))
        .collect();
    let started = Instant::now();
    let made = at_most(
        parallel,
        names.iter().map(|name| {
            let docker = docker.clone();
            let name = name.clone();
            async move {
                let body = ContainerCreateBody {
                    image: Some("lc-busybox:latest".into()),
                    cmd: Some(vec!["sleep".into(), "3600".into()]),
                    host_config: Some(HostConfig {
                        network_mode: Some("none".into()),
                        init: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let options = CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                };
                let created = docker.create_container(Some(options), body).await?;
                docker.start_container(&created.id, None).await?;
                anyhow::Ok(())
            }
        }),
    )
    .await;
    let make_s = started.elapsed().as_secs_f64();
    // Removed also after a failed start, so that nothing is left on the engine.
    let started = Instant::now();
    let made_ok = made.is_ok();
    let removed = at_most(
        parallel,
        names.iter().map(|name| {
            let docker = docker.clone();
            let name = name.clone();
            async move {
                let stop = StopContainerOptions {
                    t: Some(1),
                    ..Default::default()
                };
                if made_ok {
                    docker.stop_container(&name, Some(stop)).await?;
                }
                let remove = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                match docker.remove_container(&name, Some(remove)).await {
                    Err(_) if !made_ok => {} // never made
                    other => other?,
                }
                anyhow::Ok(())
            }
        }),
    )
    .await;
    made?;
    removed?;
    Ok(Floor {
        make_s,
        remove_s: started.elapsed().as_secs_f64(),
    })
}

/// Runs every future, at most `limit` at once; the first error ends it.
async fn at_most<F>(limit: usize, work: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks = Vec::new();
    for future in work {
        let permit = permits.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let result = future.await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(600), task)
            .await
            .context("a floor call hung")???;
    }
    Ok(())
}
