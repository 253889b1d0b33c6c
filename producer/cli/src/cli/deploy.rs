//! `lc deploy ...`: create, update, tear down, list and show deployments.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use lc_deployment::DeploymentStore as Store;
use lc_deployment::Deployments;
use lc_deployment::{
    AckOutcome, CreateOutcome, DeploymentRow, DeploymentState, Spec, TeardownRequest,
    UpdateOutcome, redact_secrets,
};
use lc_shared::config::{ConnectOpts, parse_duration};
use lc_shared::store::JobFilter;
use uuid::Uuid;

use super::{output, producer, store};
use lc_deployment::{DeploymentOptions, DeploymentView};
use lc_producer::Producer;

#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Create a deployment from a spec file (JSON or YAML): provision its machines,
    /// then deploy its payload on them
    #[command(after_help = "Examples:
  lc deploy create examples/demo.yaml --wait
  lc deploy create cloud.json --no-deploy --json")]
    Create(CreateArgs),
    /// Deploy a changed spec (same name, nodes and provider): the containers are
    /// replaced one machine at a time
    Update(UpdateArgs),
    /// Remove a deployment's containers and machines
    Teardown(TeardownArgs),
    /// List deployments, newest first
    Ls(LsArgs),
    /// A deployment: its machines (engine URL, IP, state), containers, jobs, history
    Show(ShowArgs),
    /// Acknowledge a `leftovers` deployment after checking the provider: its abandoned
    /// machines (broken docker-machine entries) were looked for and deleted by hand
    #[command(
        after_help = "A teardown that meets a machine whose docker-machine state is broken drops
that state and marks the machine abandoned: its cloud resource, if one was made,
may still exist. `lc stuck` lists such deployments. Look for machines with the
listed names at the provider, delete them there, then:
  lc deploy ack demo --note 'deleted demo-2 in the DigitalOcean console'"
    )]
    Ack(AckArgs),
}

#[derive(Args, Debug)]
pub struct AckArgs {
    /// Deployment name or id
    pub name: String,
    /// What was checked or done, kept in the deployment's history
    #[arg(long, default_value = "checked the provider")]
    pub note: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The spec file (.json for JSON, anything else is read as YAML)
    pub spec: PathBuf,
    /// Only provision the machines; deploy later with `lc deploy update`
    #[arg(long)]
    pub no_deploy: bool,
    /// Queue of the deployment's jobs
    #[arg(long, default_value = lc_shared::job::DEFAULT_QUEUE)]
    pub queue: String,
    /// Do not check that the credential variables the spec names are set here (the
    /// workers still check their own environment)
    #[arg(long)]
    pub skip_credentials_check: bool,
    /// Wait until the deployment is deployed (or provisioned, with --no-deploy);
    /// exit 1 if it fails
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub spec: PathBuf,
    #[arg(long, default_value = lc_shared::job::DEFAULT_QUEUE)]
    pub queue: String,
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TeardownArgs {
    /// Deployment name or id
    pub name: String,
    #[arg(long, default_value = lc_shared::job::DEFAULT_QUEUE)]
    pub queue: String,
    /// Wait until nothing is left; exit 1 if the teardown fails
    #[arg(long)]
    pub wait: bool,
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub timeout: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Include torn down deployments
    #[arg(long)]
    pub all: bool,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Deployment name or id
    pub name: String,
    /// How many of the latest events to show
    #[arg(long, default_value_t = 20)]
    pub events: i64,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(connect: &ConnectOpts, command: DeployCommand) -> anyhow::Result<i32> {
    match command {
        DeployCommand::Create(args) => create(connect, args).await,
        DeployCommand::Update(args) => update(connect, args).await,
        DeployCommand::Teardown(args) => teardown(connect, args).await,
        DeployCommand::Ls(args) => ls(&store(connect)?, args).await,
        DeployCommand::Show(args) => show(&store(connect)?, args).await,
        DeployCommand::Ack(args) => ack(&store(connect)?, args).await,
    }
}

async fn ack(store: &Store, args: AckArgs) -> anyhow::Result<i32> {
    let id = super::resolve_deployment(store, &args.name).await?;
    let producer = Deployments::new(Producer::from_parts(store.jobs().clone(), None)?);
    let outcome = producer
        .acknowledge_leftovers(&id.to_string(), &args.note)
        .await?;
    let (state, abandoned) = match outcome {
        AckOutcome::Acknowledged { abandoned } => ("torn_down".to_owned(), abandoned),
        AckOutcome::NotLeftovers(state) => {
            anyhow::bail!(
                "deployment {} is {state}, not leftovers: nothing to acknowledge",
                args.name
            )
        }
        AckOutcome::NotFound => anyhow::bail!("no deployment {}", args.name),
    };
    if args.json {
        output::json(
            &serde_json::json!({"deployment_id": id, "state": state, "abandoned": abandoned}),
        )?;
    } else {
        println!(
            "deployment {} is torn down; abandoned machine(s) acknowledged: {}",
            args.name,
            abandoned.join(", ")
        );
    }
    Ok(0)
}

fn read_spec(path: &std::path::Path) -> anyhow::Result<Spec> {
    Ok(Spec::from_file(path)?)
}

fn check_queue(queue: &str) -> anyhow::Result<()> {
    lc_shared::job::validate_queue_name(queue).map_err(|err| anyhow::anyhow!("invalid job: {err}"))
}

async fn create(connect: &ConnectOpts, args: CreateArgs) -> anyhow::Result<i32> {
    let spec = read_spec(&args.spec)?;
    check_queue(&args.queue)?;
    if !args.skip_credentials_check {
        let missing: Vec<&str> = spec
            .provider
            .credentials_env()
            .iter()
            .filter(|name| std::env::var(name.as_str()).map_or(true, |value| value.is_empty()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "credential environment variable(s) {} not set: export them for `lc` and for every lc-worker \
                 (values are read from the environment at run time and never stored); \
                 --skip-credentials-check skips this check where only the workers hold them",
                missing.join(", ")
            );
        }
    }
    let producer = producer(connect).await?;
    let options = DeploymentOptions {
        queue: args.queue.clone(),
        deploy: !args.no_deploy,
    };
    let outcome = Deployments::new(producer.clone())
        .create(&spec, &options)
        .await?;
    let (id, provision) = match outcome {
        CreateOutcome::Created { id, provision } => (id, provision),
        CreateOutcome::NameTaken { id, state } => anyhow::bail!(
            "deployment {:?} already exists ({id}, {state}); tear it down first, or change its payload with `lc deploy update`",
            spec.name
        ),
    };
    if args.json && !args.wait {
        output::json(
            &serde_json::json!({ "id": id, "name": spec.name, "provision_job": provision.id }),
        )?;
    } else if !args.json {
        println!(
            "deployment {} ({id}) created: provisioning {} machine(s){} (job {})",
            spec.name,
            spec.node_count(),
            if args.no_deploy {
                ""
            } else {
                ", then deploying"
            },
            provision.id
        );
    }
    if !args.wait {
        return Ok(0);
    }
    let target = if args.no_deploy {
        DeploymentState::Provisioned
    } else {
        DeploymentState::Deployed
    };
    wait_for(
        &Store::new(producer.store().clone()),
        id,
        target,
        args.timeout,
        args.json,
    )
    .await
}

async fn update(connect: &ConnectOpts, args: UpdateArgs) -> anyhow::Result<i32> {
    let spec = read_spec(&args.spec)?;
    check_queue(&args.queue)?;
    let producer = producer(connect).await?;
    let options = DeploymentOptions {
        queue: args.queue.clone(),
        ..Default::default()
    };
    match Deployments::new(producer.clone())
        .update(&spec, &options)
        .await?
    {
        UpdateOutcome::Updated {
            id,
            generation,
            deploy,
        } => {
            if args.json && !args.wait {
                output::json(
                    &serde_json::json!({ "id": id, "generation": generation, "deploy_job": deploy.id }),
                )?;
            } else if !args.json {
                println!(
                    "deployment {} now at generation {generation}: deploying (job {})",
                    spec.name, deploy.id
                );
            }
            if args.wait {
                return wait_for(
                    &Store::new(producer.store().clone()),
                    id,
                    DeploymentState::Deployed,
                    args.timeout,
                    args.json,
                )
                .await;
            }
            Ok(0)
        }
        UpdateOutcome::NotFound => anyhow::bail!("no live deployment named {:?}", spec.name),
        UpdateOutcome::NotUpdatable { state, reason } => {
            anyhow::bail!("deployment {:?} is {state}: {reason}", spec.name)
        }
    }
}

async fn teardown(connect: &ConnectOpts, args: TeardownArgs) -> anyhow::Result<i32> {
    check_queue(&args.queue)?;
    let producer = producer(connect).await?;
    let store = Store::new(producer.store().clone());
    let id = super::resolve_deployment(&store, &args.name).await?;
    let producer = Deployments::new(producer);
    let options = DeploymentOptions {
        queue: args.queue.clone(),
        ..Default::default()
    };
    match producer
        .teardown(&id.to_string(), "teardown requested by operator", &options)
        .await?
    {
        TeardownRequest::Requested { job, was } => {
            if args.json && !args.wait {
                output::json(&serde_json::json!({ "id": id, "teardown_job": job.id, "was": was }))?;
            } else if !args.json {
                let note = if job.created {
                    ""
                } else {
                    " (already under way)"
                };
                println!(
                    "deployment {} ({id}) tearing down (was {was}): job {}{note}",
                    args.name, job.id
                );
            }
        }
        TeardownRequest::AlreadyTornDown => {
            if args.json {
                output::json(&serde_json::json!({ "id": id, "state": "torn_down" }))?;
            } else {
                println!(
                    "deployment {} is torn down already; nothing to do",
                    args.name
                );
            }
            return Ok(0);
        }
        TeardownRequest::NotFound => anyhow::bail!("no deployment {}", args.name),
    }
    if args.wait {
        return wait_for(
            &store,
            id,
            DeploymentState::TornDown,
            args.timeout,
            args.json,
        )
        .await;
    }
    Ok(0)
}

/// Polls until the deployment reaches `target`; exit 1 when it ends elsewhere (failed,
/// rolled back, a dead teardown job) or the time is up.
async fn wait_for(
    store: &Store,
    id: Uuid,
    target: DeploymentState,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<i32> {
    let started = Instant::now();
    loop {
        let deployment = store
            .deployment(id)
            .await?
            .context("the deployment vanished")?;
        let state = deployment.state;
        let failed = match (target, state) {
            (target, state) if target == state => {
                if json {
                    output::json(&serde_json::json!({
                        "id": id,
                        "name": deployment.name,
                        "state": state,
                        "seconds": started.elapsed().as_secs_f64(),
                    }))?;
                } else {
                    println!(
                        "deployment {} is {state} after {:.1}s",
                        deployment.name,
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(0);
            }
            (DeploymentState::TornDown, DeploymentState::Leftovers) => Some(
                "the teardown ended, but some machines could not be confirmed removed and may still exist at the provider: `lc stuck` lists them; delete them there, then `lc deploy ack`"
                    .to_owned(),
            ),
            (DeploymentState::TornDown, _) => dead_teardown(store, id).await?,
            (
                _,
                DeploymentState::Failed | DeploymentState::TearingDown | DeploymentState::TornDown,
            ) => Some(
                deployment
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("it is {state}")),
            ),
            _ => None,
        };
        if let Some(reason) = failed {
            eprintln!(
                "deployment {} did not become {target} (it is {state}): {reason}",
                deployment.name
            );
            eprintln!(
                "hint: `lc deploy show {}` shows its machines, containers, jobs and history",
                deployment.name
            );
            return Ok(1);
        }
        if started.elapsed() > timeout {
            eprintln!(
                "deployment {} is still {state} after {timeout:?}",
                deployment.name
            );
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// While waiting for a teardown: its error once every teardown job of the deployment
/// is dead.
async fn dead_teardown(store: &Store, id: Uuid) -> anyhow::Result<Option<String>> {
    let filter = JobFilter {
        kind: Some("teardown".into()),
        group_id: Some(id),
        limit: 100,
        ..Default::default()
    };
    let jobs = store.list_jobs(&filter).await?;
    if !jobs.is_empty()
        && jobs
            .iter()
            .all(|job| job.state == "dead" || job.state == "cancelled")
    {
        return Ok(Some(format!(
            "teardown job {} is {}: {}",
            jobs[0].id,
            jobs[0].state,
            jobs[0].last_error.as_deref().unwrap_or("no error recorded")
        )));
    }
    Ok(None)
}

async fn ls(store: &Store, args: LsArgs) -> anyhow::Result<i32> {
    let deployments = store
        .list_deployments(args.all, args.limit.clamp(1, 10_000))
        .await?;
    if args.json {
        let mut out = serde_json::to_value(&deployments)?;
        redact_secrets(&mut out);
        output::json(&out)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|summary| {
            let d = &summary.deployment;
            vec![
                d.name.clone(),
                d.state.to_string(),
                d.provider.clone(),
                format!("{}/{}", summary.machines_ready, d.node_count),
                summary.containers_running.to_string(),
                d.generation.to_string(),
                d.owner.clone(),
                output::since(d.updated_at),
                output::short(d.last_error.as_deref().unwrap_or(""), 50),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "STATE",
            "PROVIDER",
            "READY",
            "RUNNING",
            "GEN",
            "OWNER",
            "CHANGED",
            "LAST ERROR",
        ],
        &rows,
    );
    Ok(0)
}

/// Things an operator should know that the states alone do not say.
fn warnings(deployment: &DeploymentRow, jobs: &[lc_shared::store::JobRow]) -> Vec<String> {
    let mut warnings = Vec::new();
    let live = !matches!(
        deployment.state,
        DeploymentState::Deployed | DeploymentState::TornDown | DeploymentState::Provisioned
    );
    if live {
        for job in jobs.iter().filter(|job| job.state == "dead") {
            warnings.push(format!(
                "{} job {} is dead: {}; fix the cause and `lc jobs retry {}`, or `lc deploy teardown {}`",
                job.kind,
                job.id,
                output::short(job.last_error.as_deref().unwrap_or("no error recorded"), 120),
                job.id,
                deployment.name
            ));
        }
    }
    if deployment.state == DeploymentState::Failed
        && !jobs
            .iter()
            .any(|job| job.kind == "teardown" && (job.state == "queued" || job.state == "running"))
    {
        warnings.push(format!(
            "deployment failed: `lc deploy teardown {}` removes what is left",
            deployment.name
        ));
    }
    warnings
}

async fn show(store: &Store, args: ShowArgs) -> anyhow::Result<i32> {
    let id = super::resolve_deployment(store, &args.name).await?;
    let producer = Deployments::new(Producer::from_parts(store.jobs().clone(), None)?);
    let Some(view) = producer.get(&id.to_string(), args.events).await? else {
        eprintln!("no deployment {}", args.name);
        return Ok(1);
    };
    let DeploymentView {
        deployment,
        machines,
        containers,
        jobs,
        events,
    } = view;
    let warnings = warnings(&deployment, &jobs);
    if args.json {
        let jobs_json = serde_json::to_value(&jobs)?;
        output::json(&serde_json::json!({
            "deployment": deployment,
            "machines": machines,
            "containers": containers,
            "jobs": jobs_json,
            "events": events,
            "warnings": warnings,
        }))?;
        return Ok(0);
    }
    println!("deployment {} ({})", deployment.name, deployment.id);
    println!("owner      {}", deployment.owner);
    println!("provider   {}", deployment.provider);
    println!(
        "state      {} (generation {})",
        deployment.state, deployment.generation
    );
    println!("nodes      {}", deployment.node_count);
    println!(
        "created    {} ago, changed {} ago",
        output::since(deployment.created_at),
        output::since(deployment.updated_at)
    );
    if let Some(error) = &deployment.last_error {
        println!("last error {error}");
    }
    for warning in &warnings {
        println!("warning    {warning}");
    }
    println!();
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|machine| {
            vec![
                machine.name.clone(),
                machine.state.to_string(),
                output::opt(&machine.engine_url),
                output::opt(&machine.ip_address),
                output::opt(&machine.driver),
                output::short(machine.last_error.as_deref().unwrap_or(""), 70),
            ]
        })
        .collect();
    output::table(
        &["MACHINE", "STATE", "ENGINE", "IP", "DRIVER", "LAST ERROR"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|container| {
            vec![
                container.name.clone(),
                container.machine_name.clone(),
                container.generation.to_string(),
                container.state.to_string(),
                container
                    .docker_id
                    .as_deref()
                    .map(|id| id[..id.len().min(12)].to_owned())
                    .unwrap_or_else(|| "-".into()),
                container.image.clone(),
                output::short(container.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "CONTAINER",
            "MACHINE",
            "GEN",
            "STATE",
            "DOCKER ID",
            "IMAGE",
            "LAST ERROR",
        ],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        // The provisioning watchdog's runs, unless one died.
        .filter(|job| {
            !(job.kind == "provision" && job.payload.get("watch").is_some() && job.state != "dead")
        })
        .take(20)
        .map(|job| {
            vec![
                job.id.to_string(),
                job.kind.to_string(),
                job.state.to_string(),
                format!("{}/{}", job.attempt, job.max_attempts),
                output::since(job.updated_at),
                output::short(job.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &["JOB", "KIND", "STATE", "ATTEMPT", "CHANGED", "LAST ERROR"],
        &rows,
    );
    println!();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            let change = output::change(&event.from_state, &event.to_state, "-");
            vec![
                event.at.format("%H:%M:%S%.3f").to_string(),
                event.subject.clone(),
                change,
                output::short(event.message.as_deref().unwrap_or(""), 80),
            ]
        })
        .collect();
    output::table(&["AT", "SUBJECT", "CHANGE", "MESSAGE"], &rows);
    Ok(0)
}
