//! `lc deploy ...`: create, update, tear down, list and show deployments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::plan::{Change, Plan, PlanAction};
use lc_deployment::{
    AckOutcome, CreateOutcome, DeploymentOptions, DeploymentState, DeploymentSummary,
    DeploymentView, DeploymentWait, Deployments, ExtendOutcome, Spec, TeardownRequest,
    UpdateOutcome, WaitOutcome,
};
use lc_shared::config::parse_duration;
use uuid::Uuid;

use super::{health, output};

#[derive(Subcommand, Debug)]
pub enum DeployCommand {
    /// Create a deployment from a spec file (JSON or YAML): provision its machines,
    /// then deploy its payload on them
    #[command(after_help = "Examples:
  lc deploy create examples/demo.yaml --wait
  lc deploy create cloud.json --no-deploy --json
  lc deploy create examples/demo.yaml --ttl 24h     # torn down by itself in 24 hours
  lc deploy create cloud.yaml --dry-run             # what would be made; nothing is written")]
    Create(CreateArgs),
    /// Deploy a changed spec (same name, nodes and provider): the containers are
    /// replaced one machine at a time
    #[command(after_help = "Examples:
  lc deploy update web.yaml --dry-run --json        # what would change; nothing is written")]
    Update(UpdateArgs),
    /// Remove a deployment's containers and machines
    Teardown(TeardownArgs),
    /// Move a deployment's expiry later (its delayed teardown moves with it)
    #[command(after_help = "Examples:
  lc deploy extend demo 12h      # expires 12 hours later than it would have")]
    Extend(ExtendArgs),
    /// List deployments, newest first
    Ls(LsArgs),
    /// A deployment: its machines (engine URL, IP, state), containers, health, jobs,
    /// history
    Show(ShowArgs),
    /// Check a deployment's health now (as its periodic checks do): record each machine's
    /// and container's health, repair as its spec says, leave `degraded` when all is well
    #[command(after_help = "Examples:
  lc deploy check demo --wait      # run a check now and show what it found")]
    Check(health::CheckArgs),
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
pub struct ExtendArgs {
    /// Deployment name or id
    pub name: String,
    /// How much later it expires (e.g. 12h, 90m, 2d)
    #[arg(value_parser = parse_duration)]
    pub by: Duration,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The spec file (.json for JSON, anything else is read as YAML)
    pub spec: PathBuf,
    /// Tear the deployment down by itself this long after it is created (e.g. 24h);
    /// replaces the spec's `ttl`
    #[arg(long)]
    pub ttl: Option<String>,
    /// Validate and print what would be made (machines, containers, docker-machine
    /// calls with credentials masked, concurrency keys, jobs); write nothing
    #[arg(long)]
    pub dry_run: bool,
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
    /// Validate and print what would change (containers replaced, generation, spec
    /// fields); write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Queue of the deploy job (default: the queue the deployment was made on)
    #[arg(long)]
    pub queue: Option<String>,
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
    /// Queue of the teardown job (default: the queue the deployment was made on)
    #[arg(long)]
    pub queue: Option<String>,
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

pub async fn run(deployments: &Deployments, command: DeployCommand) -> anyhow::Result<i32> {
    match command {
        DeployCommand::Create(args) => create(deployments, args).await,
        DeployCommand::Update(args) => update(deployments, args).await,
        DeployCommand::Teardown(args) => teardown(deployments, args).await,
        DeployCommand::Extend(args) => extend(deployments, args).await,
        DeployCommand::Ls(args) => ls(deployments, args).await,
        DeployCommand::Show(args) => show(deployments, args).await,
        DeployCommand::Ack(args) => ack(deployments, args).await,
        DeployCommand::Check(args) => health::check(deployments, args).await,
    }
}

async fn ack(deployments: &Deployments, args: AckArgs) -> anyhow::Result<i32> {
    let id = deployments.resolve(&args.name).await?;
    let abandoned = match deployments.acknowledge_leftovers(id, &args.note).await? {
        AckOutcome::Acknowledged { abandoned } => abandoned,
        AckOutcome::NotLeftovers(state) => {
            anyhow::bail!(
                "deployment {} is {state}, not leftovers: nothing to acknowledge",
                args.name
            )
        }
        AckOutcome::NotFound => anyhow::bail!("no deployment {}", args.name),
    };
    if args.json {
        output::json(&serde_json::json!({
            "deployment_id": id,
            "state": DeploymentState::TornDown,
            "abandoned": abandoned,
        }))?;
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

/// Refuses a spec whose credential variables are not set here (unless told to skip).
fn check_credentials(spec: &Spec) -> anyhow::Result<()> {
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
    Ok(())
}

async fn create(deployments: &Deployments, args: CreateArgs) -> anyhow::Result<i32> {
    let mut spec = read_spec(&args.spec)?;
    if let Some(ttl) = &args.ttl {
        spec.set_ttl(ttl)?;
    }
    check_queue(&args.queue)?;
    if !args.skip_credentials_check {
        check_credentials(&spec)?;
    }
    let options = DeploymentOptions {
        queue: args.queue.clone(),
        deploy: !args.no_deploy,
    };
    if args.dry_run {
        return print_plan(&deployments.plan_create(&spec, &options).await?, args.json);
    }
    let (id, provision, expires_at) = match deployments.create(&spec, &options).await? {
        CreateOutcome::Created {
            id,
            provision,
            expires_at,
            ..
        } => (id, provision, expires_at),
        CreateOutcome::NameTaken { id, state } => anyhow::bail!(
            "deployment {:?} already exists ({id}, {state}); tear it down first, or change its payload with `lc deploy update`",
            spec.name
        ),
    };
    if args.json && !args.wait {
        output::json(
            &serde_json::json!({ "id": id, "name": spec.name, "provision_job": provision.id, "expires_at": expires_at }),
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
        if let Some(at) = expires_at {
            println!("expires at {at} ({})", time_left(Some(seconds_until(at))));
        }
    }
    if !args.wait {
        return Ok(0);
    }
    let target = if args.no_deploy {
        DeploymentState::Provisioned
    } else {
        DeploymentState::Deployed
    };
    wait_for(deployments, id, target, args.timeout, args.json).await
}

async fn update(deployments: &Deployments, args: UpdateArgs) -> anyhow::Result<i32> {
    let spec = read_spec(&args.spec)?;
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => match deployments.resolve(&spec.name).await {
            Ok(id) => deployments.queue_of(id).await?,
            // The update says that no deployment has the name.
            Err(lc_deployment::DeploymentError::NotFound(_)) => {
                lc_shared::job::DEFAULT_QUEUE.to_owned()
            }
            Err(err) => return Err(err.into()),
        },
    };
    check_queue(&queue)?;
    let options = DeploymentOptions {
        queue,
        ..Default::default()
    };
    if args.dry_run {
        return print_plan(&deployments.plan_update(&spec, &options).await?, args.json);
    }
    let (id, generation, deploy) = match deployments.update(&spec, &options).await? {
        UpdateOutcome::Updated {
            id,
            generation,
            deploy,
        } => (id, generation, deploy),
        UpdateOutcome::NotFound => anyhow::bail!("no live deployment named {:?}", spec.name),
        UpdateOutcome::NotUpdatable { state, reason } => {
            anyhow::bail!("deployment {:?} is {state}: {reason}", spec.name)
        }
    };
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
            deployments,
            id,
            DeploymentState::Deployed,
            args.timeout,
            args.json,
        )
        .await;
    }
    Ok(0)
}

async fn teardown(deployments: &Deployments, args: TeardownArgs) -> anyhow::Result<i32> {
    if let Some(queue) = &args.queue {
        check_queue(queue)?;
    }
    let id = deployments.resolve(&args.name).await?;
    let queue = match &args.queue {
        Some(queue) => queue.clone(),
        None => deployments.queue_of(id).await?,
    };
    let options = DeploymentOptions {
        queue,
        ..Default::default()
    };
    match deployments
        .teardown(id, "teardown requested by operator", &options)
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
                output::json(&serde_json::json!({ "id": id, "state": DeploymentState::TornDown }))?;
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
            deployments,
            id,
            DeploymentState::TornDown,
            args.timeout,
            args.json,
        )
        .await;
    }
    Ok(0)
}

/// Prints a plan (what a create or an update would do; nothing was written); a refused
/// one ends in its error (exit 1), after the plan.
fn print_plan(plan: &Plan, json: bool) -> anyhow::Result<i32> {
    if json {
        output::json(plan)?;
    } else {
        print_plan_text(plan);
    }
    match &plan.refused {
        Some(reason) => anyhow::bail!(
            "deployment {:?} would be refused: {reason}",
            plan.deployment
        ),
        None => Ok(0),
    }
}

fn print_plan_text(plan: &Plan) {
    let action = match plan.action {
        PlanAction::Create => "create",
        PlanAction::Update => "update",
    };
    println!("dry run: nothing was written");
    let from = plan
        .current_generation
        .map(|current| format!("{current} → "))
        .unwrap_or_default();
    println!(
        "{action} deployment {}: generation {from}{}",
        plan.deployment, plan.generation
    );
    if let Some(at) = plan.expires_at {
        println!("expires {at} ({})", time_left(Some(seconds_until(at))));
    }
    if !plan.changes.is_empty() {
        println!("changes {}", plan.changes.join(", "));
    }
    let change = |change: Change| match change {
        Change::Create => "+ create",
        Change::Keep => "  keep",
        Change::Remove => "- remove",
    };
    if !plan.machines.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = plan
            .machines
            .iter()
            .map(|m| {
                vec![
                    change(m.change).to_owned(),
                    m.name.clone(),
                    m.provider.clone(),
                    output::opt(&m.driver),
                ]
            })
            .collect();
        output::table(&["CHANGE", "MACHINE", "PROVIDER", "DRIVER"], &rows);
    }
    if !plan.containers.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = plan
            .containers
            .iter()
            .map(|c| {
                vec![
                    change(c.change).to_owned(),
                    c.name.clone(),
                    c.machine.clone(),
                    c.generation.to_string(),
                    c.image.clone(),
                ]
            })
            .collect();
        output::table(&["CHANGE", "CONTAINER", "MACHINE", "GEN", "IMAGE"], &rows);
    }
    if let Some(first) = plan.calls.first() {
        // Every call of a plan has the same environment and global flags.
        let mut prefix = first.clone();
        prefix.args = vec!["ARGS".to_owned()];
        println!(
            "\ndocker-machine calls, each as (credentials masked):\n  {}",
            prefix.command_line()
        );
        for call in &plan.calls {
            let key = call
                .concurrency_key
                .as_deref()
                .map(|key| format!("  [concurrency key {key}]"))
                .unwrap_or_default();
            println!("  {}: {}{key}", call.machine, call.args.join(" "));
        }
    }
    if !plan.jobs.is_empty() {
        println!("\njobs:");
        for jobs in &plan.jobs {
            let when = jobs
                .run_at
                .map(|at| format!(", due {at}"))
                .unwrap_or_default();
            println!(
                "  {} x{} (queue {}{when})",
                jobs.kind, jobs.count, jobs.queue
            );
        }
    }
    for note in &plan.notes {
        println!("\nalso made: {note}");
    }
}

async fn extend(deployments: &Deployments, args: ExtendArgs) -> anyhow::Result<i32> {
    let id = deployments.resolve(&args.name).await?;
    match deployments.extend(id, args.by).await? {
        ExtendOutcome::Extended {
            id,
            was,
            expires_at,
            teardown,
        } => {
            if args.json {
                output::json(&serde_json::json!({
                    "id": id, "was": was, "expires_at": expires_at, "teardown_job": teardown.id,
                }))?;
            } else {
                println!(
                    "deployment {} now expires at {expires_at} ({}; was {was}): teardown job {}",
                    args.name,
                    time_left(Some(seconds_until(expires_at))),
                    teardown.id
                );
            }
            Ok(0)
        }
        ExtendOutcome::NotExpiring => anyhow::bail!(
            "deployment {} has no expiry, so there is nothing to extend (give one at create: --ttl, or ttl/expires_at in the spec)",
            args.name
        ),
        ExtendOutcome::NotLive(state) => {
            anyhow::bail!(
                "deployment {} is {state}: its expiry no longer applies",
                args.name
            )
        }
        ExtendOutcome::NotFound => anyhow::bail!("no deployment {}", args.name),
    }
}

/// Seconds from now until `at` (negative once past).
fn seconds_until(at: chrono::DateTime<chrono::Utc>) -> f64 {
    (at - chrono::Utc::now()).num_milliseconds() as f64 / 1000.0
}

/// How long is left: "in 23h 59m", "expired 3s ago", or "-" without an expiry.
fn time_left(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(left) if left >= 0.0 => format!("in {}", output::age(left)),
        Some(past) => format!("expired {} ago", output::age(-past)),
    }
}

/// Waits until the deployment reaches `target`; exit 1 when it ends elsewhere (failed,
/// rolled back, a dead teardown job) or the time is up.
async fn wait_for(
    deployments: &Deployments,
    id: Uuid,
    target: DeploymentState,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<i32> {
    let waited = deployments.wait(id, target, timeout).await?;
    let DeploymentWait {
        name,
        state,
        seconds,
        ..
    } = &waited;
    match &waited.outcome {
        WaitOutcome::Reached if json => {
            output::json(&serde_json::json!({
                "id": id,
                "name": name,
                "state": state,
                "seconds": seconds,
            }))?;
        }
        WaitOutcome::Reached => println!("deployment {name} is {state} after {seconds:.1}s"),
        WaitOutcome::Failed { reason } => {
            eprintln!("deployment {name} did not become {target} (it is {state}): {reason}");
            eprintln!(
                "hint: `lc deploy show {name}` shows its machines, containers, jobs and history"
            );
            return Ok(1);
        }
        WaitOutcome::TimedOut => {
            eprintln!("deployment {name} is still {state} after {timeout:?}");
            return Ok(1);
        }
    }
    Ok(0)
}

async fn ls(deployments: &Deployments, args: LsArgs) -> anyhow::Result<i32> {
    let found = deployments.list(args.all, args.limit).await?;
    if args.json {
        output::json(&found)?;
    } else {
        print_deployments(&found);
    }
    Ok(0)
}

fn print_deployments(found: &[DeploymentSummary]) {
    let rows: Vec<Vec<String>> = found
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
                time_left(summary.expires_in_secs),
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
            "EXPIRES",
            "OWNER",
            "CHANGED",
            "LAST ERROR",
        ],
        &rows,
    );
}

async fn show(deployments: &Deployments, args: ShowArgs) -> anyhow::Result<i32> {
    let id = deployments.resolve(&args.name).await?;
    let view = deployments.get(id, args.events).await?;
    if args.json {
        output::json(&view)?;
        return Ok(0);
    }
    print_summary(&view);
    health::print(&view);
    println!();
    print_machines(&view);
    println!();
    print_containers(&view);
    println!();
    print_jobs(&view);
    println!();
    print_events(&view);
    Ok(0)
}

fn print_summary(view: &DeploymentView) {
    let deployment = &view.deployment;
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
    if let Some(at) = deployment.expires_at {
        println!("expires    {at} ({})", time_left(Some(seconds_until(at))));
    }
    if let Some(error) = &deployment.last_error {
        println!("last error {error}");
    }
    for warning in &view.warnings {
        println!("warning    {warning}");
    }
}

fn print_machines(view: &DeploymentView) {
    let rows: Vec<Vec<String>> = view
        .machines
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
}

fn print_containers(view: &DeploymentView) {
    let rows: Vec<Vec<String>> = view
        .containers
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
}

/// The latest 20 jobs worth showing (see `DeploymentView::visible_jobs`).
fn print_jobs(view: &DeploymentView) {
    let rows: Vec<Vec<String>> = view
        .visible_jobs()
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
}

fn print_events(view: &DeploymentView) {
    let rows: Vec<Vec<String>> = view
        .events
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
}
