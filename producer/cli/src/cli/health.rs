//! `lc deploy check NAME` (a health check now) and the health part of
//! `lc deploy show`: each machine's and container's health, the last check and what it
//! found and did.

use std::time::Duration;

use clap::Args;
use lc_deployment::{CheckRequest, DeploymentState, DeploymentView, Deployments};
use lc_shared::config::parse_duration;

use super::output;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Deployment name or id
    pub name: String,
    /// Wait until the check ran, then show the deployment's health
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

pub async fn check(deployments: &Deployments, args: CheckArgs) -> anyhow::Result<i32> {
    let id = deployments.resolve(&args.name).await?;
    let job = match deployments.check(id).await? {
        CheckRequest::Enqueued(job) => job,
        CheckRequest::NotLive(state) => {
            anyhow::bail!(
                "deployment {} is {state}: there is nothing to check",
                args.name
            )
        }
        CheckRequest::NotFound => anyhow::bail!("no deployment {}", args.name),
    };
    let mut ended = None;
    if args.wait {
        let waited = deployments
            .inspector()
            .wait(&[job.id], args.timeout)
            .await?;
        ended = Some(waited.all_ended);
    }
    if args.json {
        let view = match ended {
            Some(_) => Some(deployments.get(id, 0).await?),
            None => None,
        };
        output::json(&serde_json::json!({
            "id": id,
            "check_job": job.id,
            "created": job.created,
            "ran": ended,
            "deployment": view.as_ref().map(|view| &view.deployment),
            "machines": view.as_ref().map(|view| &view.machines),
            "containers": view.as_ref().map(|view| &view.containers),
        }))?;
    } else {
        let waiting = if job.created {
            ""
        } else {
            " (asked for earlier, not started yet)"
        };
        println!("health check of {}: job {}{waiting}", args.name, job.id);
        if let Some(ran) = ended {
            if !ran {
                println!("the check did not finish within {:?}", args.timeout);
            }
            let view = deployments.get(id, 0).await?;
            println!();
            print(&view);
        }
    }
    Ok(match ended {
        Some(false) => 1,
        _ => 0,
    })
}

/// The deployment's health: the last check, then each machine with its container.
pub fn print(view: &DeploymentView) {
    let deployment = &view.deployment;
    if deployment.state == DeploymentState::TornDown {
        return;
    }
    println!(
        "health     every {}, repair {}, max_unhealthy {}",
        output::age(deployment.health_interval_ms as f64 / 1000.0),
        deployment.repair,
        deployment.max_unhealthy
    );
    match deployment.health_checked_at {
        Some(at) => println!(
            "last check {} ago: {}",
            output::since(at),
            deployment.health_reason.as_deref().unwrap_or("-")
        ),
        None => println!("last check never"),
    }
    let rows: Vec<Vec<String>> = view
        .machines
        .iter()
        .map(|machine| {
            let container = view
                .containers
                .iter()
                .find(|c| c.machine_id == machine.id && c.generation == deployment.generation);
            vec![
                machine.name.clone(),
                machine.health.to_string(),
                output::short(machine.health_reason.as_deref().unwrap_or("-"), 50),
                container.map_or("-".into(), |c| c.health.to_string()),
                output::short(
                    container
                        .and_then(|c| c.health_reason.as_deref())
                        .unwrap_or("-"),
                    50,
                ),
                machine
                    .health_checked_at
                    .map_or("-".into(), |at| format!("{} ago", output::since(at))),
            ]
        })
        .collect();
    output::table(
        &["MACHINE", "HEALTH", "WHY", "CONTAINER", "WHY", "CHECKED"],
        &rows,
    );
}
