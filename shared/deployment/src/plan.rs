//! Plans: what `lc deploy create|update SPEC --dry-run` says a create or an update
//! would make, change or remove (machines, containers, generations, the docker-machine
//! calls with credentials masked, the concurrency keys and the jobs), before anything
//! is written. Built here from the spec and what the database holds, by the same code
//! the store and the worker use ([`crate::docker_machine`] for the arguments, the
//! update's own checks for its refusals); [`crate::Deployments::plan_create`] and
//! [`crate::Deployments::plan_update`] read what they need and call these.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::docker_machine::{
    CRASH_REPORT_VAR, NO_CRASH_REPORT, STORAGE_PATH_VAR, concurrency_key, query_args,
    spec_create_args, tls_flags,
};
use super::{
    ContainerState, DeployPayload, DeploymentState, Provider, ProvisionMachinePayload,
    ProvisionPayload, Spec, TeardownPayload, UpdateBase, container_name, machine_name,
};
use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindOf};

/// What a credential's value is shown as.
pub const MASKED: &str = "***";
/// Where a plan's docker-machine calls have their store: a scratch directory the worker
/// makes for each step (`--machines-dir`), named by this placeholder.
pub const STORE_PLACEHOLDER: &str = "$MACHINE_STORAGE_PATH";

/// A create or an update, as it would happen.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub action: PlanAction,
    /// The deployment's name.
    pub deployment: String,
    /// The live deployment an update changes (its id and state now).
    pub id: Option<Uuid>,
    pub state: Option<DeploymentState>,
    /// The spec generation running now (update), and the one this would run.
    pub current_generation: Option<i64>,
    pub generation: i64,
    /// When the deployment would expire: a create's `ttl` counted from the database's
    /// time now, or its `expires_at`; an update keeps the deployment's.
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the create or update would be refused (then nothing below would happen).
    pub refused: Option<String>,
    /// The spec fields an update changes (dotted paths, `payload.env.GREETING`).
    pub changes: Vec<String>,
    pub machines: Vec<PlannedMachine>,
    pub containers: Vec<PlannedContainer>,
    /// docker-machine calls, in the order each machine's job makes them.
    pub calls: Vec<PlannedCall>,
    /// The jobs that would be enqueued, by kind.
    pub jobs: Vec<PlannedJobs>,
    /// Every concurrency key the calls would take.
    pub concurrency_keys: Vec<String>,
    /// Other things that would be made (certificates).
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    Create,
    Update,
}

/// What would happen to a machine or a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Create,
    Keep,
    Remove,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedMachine {
    pub name: String,
    pub node: i64,
    pub change: Change,
    pub provider: String,
    pub driver: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedContainer {
    pub name: String,
    pub machine: String,
    pub generation: i64,
    pub image: String,
    pub change: Change,
}

/// One docker-machine call: `docker-machine GLOBAL_ARGS ARGS` with `env` (credential
/// values masked), under the concurrency key of its provider account.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedCall {
    pub machine: String,
    pub op: String,
    pub program: String,
    /// The global `--tls-*` flags, with the step's store as [`STORE_PLACEHOLDER`].
    pub global_args: Vec<String>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub concurrency_key: Option<String>,
}

impl PlannedCall {
    /// The call as one shell-like line (`NAME=*** docker-machine ...`), for people.
    pub fn command_line(&self) -> String {
        let mut words: Vec<String> = self
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        words.push(self.program.clone());
        words.extend(self.global_args.iter().cloned());
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedJobs {
    pub kind: String,
    pub count: i64,
    pub queue: String,
    /// When they would become due; `None`: at once.
    pub run_at: Option<DateTime<Utc>>,
}

fn jobs(kind: JobKind, count: i64, queue: &str, run_at: Option<DateTime<Utc>>) -> PlannedJobs {
    PlannedJobs {
        kind: kind.as_str().to_owned(),
        count,
        queue: queue.to_owned(),
        run_at,
    }
}

impl Plan {
    fn new(action: PlanAction, spec: &Spec, generation: i64) -> Plan {
        Plan {
            action,
            deployment: spec.name.clone(),
            id: None,
            state: None,
            current_generation: None,
            generation,
            expires_at: None,
            refused: None,
            changes: Vec::new(),
            machines: Vec::new(),
            containers: Vec::new(),
            calls: Vec::new(),
            jobs: Vec::new(),
            concurrency_keys: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A create of `spec` (validated), deploying after provisioning with `deploy`, its
    /// jobs on `queue`; `refused` when the name is taken.
    pub fn create(
        spec: &Spec,
        deploy: bool,
        queue: &str,
        expires_at: Option<DateTime<Utc>>,
        refused: Option<String>,
    ) -> Plan {
        let mut plan = Plan::new(PlanAction::Create, spec, 1);
        plan.expires_at = expires_at;
        plan.refused = refused;
        if plan.refused.is_some() {
            return plan;
        }
        let driver = match &spec.provider {
            Provider::Local {} => None,
            Provider::DockerMachine { driver, .. } => Some(driver.clone()),
        };
        let key = concurrency_key(&spec.provider);
        for node in 1..=spec.node_count() {
            let machine = machine_name(&spec.name, node);
            plan.machines.push(PlannedMachine {
                name: machine.clone(),
                node,
                change: Change::Create,
                provider: spec.provider.kind().to_owned(),
                driver: driver.clone(),
            });
            if deploy {
                plan.containers.push(PlannedContainer {
                    name: container_name(&machine, 1),
                    machine: machine.clone(),
                    generation: 1,
                    image: spec.node_payload(node).image,
                    change: Change::Create,
                });
            }
            plan.calls
                .extend(machine_calls(spec, &machine, key.as_ref()));
        }
        if let Provider::DockerMachine { ca_env, .. } = &spec.provider {
            plan.notes.push(match ca_env {
                Some(ca) => format!(
                    "a client certificate issued from the CA in ${} / ${}",
                    ca.cert, ca.key
                ),
                None => "a CA and a client certificate of the deployment's own (ECDSA P-256), before any machine is created".to_owned(),
            });
        }
        let count = spec.node_count();
        plan.jobs
            .push(jobs(KindOf::<ProvisionPayload>::KIND, 1, queue, None));
        plan.jobs.push(jobs(
            KindOf::<ProvisionMachinePayload>::KIND,
            count,
            queue,
            None,
        ));
        if deploy {
            plan.jobs
                .push(jobs(KindOf::<DeployPayload>::KIND, 1, queue, None));
        }
        if let Some(at) = expires_at {
            plan.jobs
                .push(jobs(KindOf::<TeardownPayload>::KIND, 1, queue, Some(at)));
        }
        plan.concurrency_keys = key.into_iter().collect();
        plan
    }

    /// An update of the live deployment in `base` to `spec` (validated), its deploy
    /// job on `queue`; refused when there is no such deployment or the update would be.
    pub fn update(spec: &Spec, base: Option<&UpdateBase>, queue: &str) -> Plan {
        let Some(base) = base else {
            let mut plan = Plan::new(PlanAction::Update, spec, 1);
            plan.refused = Some(format!("no live deployment named {:?}", spec.name));
            return plan;
        };
        let current = base.deployment.generation;
        let generation = current + 1;
        let mut plan = Plan::new(PlanAction::Update, spec, generation);
        plan.id = Some(base.deployment.id);
        plan.state = Some(base.deployment.state);
        plan.current_generation = Some(current);
        plan.expires_at = base.deployment.expires_at;
        plan.refused = base.refused.clone();
        plan.changes = changed_paths(&base.current.to_json(), &base.next.to_json());
        if plan.refused.is_some() {
            return plan;
        }
        for machine in &base.machines {
            plan.machines.push(PlannedMachine {
                name: machine.name.clone(),
                node: machine.node_index,
                change: Change::Keep,
                provider: base.deployment.provider.clone(),
                driver: machine.driver.clone(),
            });
            plan.containers.push(PlannedContainer {
                name: container_name(&machine.name, generation),
                machine: machine.name.clone(),
                generation,
                image: base.next.node_payload(machine.node_index).image,
                change: Change::Create,
            });
            let replaced = base.containers.iter().filter(|container| {
                container.machine_id == machine.id
                    && container.generation != generation
                    && container.state != ContainerState::Removed
            });
            for container in replaced {
                plan.containers.push(PlannedContainer {
                    name: container.name.clone(),
                    machine: machine.name.clone(),
                    generation: container.generation,
                    image: container.image.clone(),
                    change: Change::Remove,
                });
            }
        }
        plan.jobs
            .push(jobs(KindOf::<DeployPayload>::KIND, 1, queue, None));
        plan
    }
}

/// The docker-machine calls of one machine's `provision_machine` job on its first
/// attempt: create, then inspect and url (a retry first checks what an earlier attempt
/// left: status, maybe rm).
fn machine_calls(spec: &Spec, machine: &str, key: Option<&String>) -> Vec<PlannedCall> {
    let Some(create) = spec_create_args(spec, machine) else {
        return Vec::new();
    };
    let mut env = BTreeMap::new();
    env.insert(
        STORAGE_PATH_VAR.to_owned(),
        "<a scratch store made for the step>".to_owned(),
    );
    env.insert(CRASH_REPORT_VAR.to_owned(), NO_CRASH_REPORT.to_owned());
    for name in spec.provider.credentials_env() {
        env.insert(name.clone(), MASKED.to_owned());
    }
    let call = |op: &str, args: Vec<String>| PlannedCall {
        machine: machine.to_owned(),
        op: op.to_owned(),
        program: "docker-machine".to_owned(),
        global_args: tls_flags(Path::new(STORE_PLACEHOLDER)),
        args,
        env: env.clone(),
        concurrency_key: key.cloned(),
    };
    vec![
        call("create", create),
        call("inspect", query_args("inspect", machine)),
        call("url", query_args("url", machine)),
    ]
}

/// The dotted paths at which two JSON documents differ (objects are compared key by
/// key, a missing object counting as an empty one; anything else whole).
pub fn changed_paths(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(old, new, "", &mut found);
    found
}

fn walk(old: &serde_json::Value, new: &serde_json::Value, path: &str, found: &mut Vec<String>) {
    use serde_json::Value;
    let empty = Value::Object(serde_json::Map::new());
    let (old, new) = match (old, new) {
        (Value::Null, Value::Object(_)) => (&empty, new),
        (Value::Object(_), Value::Null) => (old, &empty),
        _ => (old, new),
    };
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let missing = Value::Null;
                walk(
                    old.get(key).unwrap_or(&missing),
                    new.get(key).unwrap_or(&missing),
                    &here,
                    found,
                );
            }
        }
        (old, new) if old != new => found.push(path.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::parse(text, false).expect("valid spec")
    }

    const CLOUD: &str = "name: web\nowner: ops\nnodes: 2\n\
        provider: {kind: docker-machine, driver: digitalocean, driver_flags: {digitalocean-region: fra1}, credentials_env: [DO_TOKEN]}\n\
        payload: {image: lc-busybox:latest}\n";

    #[test]
    fn a_create_plans_every_machine_its_calls_and_jobs() {
        let spec = spec(CLOUD);
        let plan = Plan::create(&spec, true, "default", None, None);
        let names: Vec<&str> = plan.machines.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["web-1", "web-2"]);
        let containers: Vec<&str> = plan.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, ["lc-web-1-g1", "lc-web-2-g1"]);
        let ops: Vec<(&str, &str)> = plan
            .calls
            .iter()
            .map(|call| (call.machine.as_str(), call.op.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("web-1", "create"),
                ("web-1", "inspect"),
                ("web-1", "url"),
                ("web-2", "create"),
                ("web-2", "inspect"),
                ("web-2", "url")
            ]
        );
        let create = &plan.calls[0];
        assert_eq!(
            create.args,
            spec_create_args(&spec, "web-1").expect("docker-machine")
        );
        assert_eq!(create.env["DO_TOKEN"], MASKED);
        assert_eq!(
            create.concurrency_key.as_deref(),
            Some("machine:digitalocean:DO_TOKEN")
        );
        let line = create.command_line();
        assert!(line.contains("DO_TOKEN=*** "), "{line}");
        assert!(
            line.contains("--tls-ca-cert $MACHINE_STORAGE_PATH/certs/ca.pem"),
            "{line}"
        );
        assert!(
            line.ends_with("create --driver digitalocean --digitalocean-region=fra1 web-1"),
            "{line}"
        );
        assert_eq!(plan.concurrency_keys, ["machine:digitalocean:DO_TOKEN"]);
        let kinds: Vec<(&str, i64)> = plan
            .jobs
            .iter()
            .map(|jobs| (jobs.kind.as_str(), jobs.count))
            .collect();
        assert_eq!(
            kinds,
            [("provision", 1), ("provision_machine", 2), ("deploy", 1)]
        );
        // Without a deploy, no containers; a taken name plans nothing.
        let plan = Plan::create(&spec, false, "default", None, None);
        assert!(plan.containers.is_empty());
        let plan = Plan::create(&spec, true, "default", None, Some("taken".into()));
        assert!(plan.machines.is_empty() && plan.jobs.is_empty());
    }

    #[test]
    fn a_local_create_makes_no_docker_machine_calls() {
        let spec = spec(
            "name: web\nowner: ops\nnodes: 1\nprovider: {kind: local}\npayload: {image: lc-busybox:latest}\n",
        );
        let at = Utc::now();
        let plan = Plan::create(&spec, true, "q", Some(at), None);
        assert!(plan.calls.is_empty() && plan.concurrency_keys.is_empty());
        let last = plan.jobs.last().expect("jobs");
        assert_eq!((last.kind.as_str(), last.run_at), ("teardown", Some(at)));
    }

    #[test]
    fn changes_are_dotted_paths() {
        let old = json!({"payload": {"image": "a", "env": {"A": "1"}}, "nodes": 2});
        let new = json!({"payload": {"image": "b", "env": {"A": "1", "B": "2"}}, "nodes": 2});
        assert_eq!(
            changed_paths(&old, &new),
            ["payload.env.B", "payload.image"]
        );
        assert!(changed_paths(&old, &old).is_empty());
        // A map the spec leaves out (serialized only when not empty) is an empty one.
        assert_eq!(
            changed_paths(
                &json!({"payload": {}}),
                &json!({"payload": {"env": {"A": "1"}}})
            ),
            ["payload.env.A"]
        );
        assert_eq!(changed_paths(&json!([1]), &json!([2])), [""]);
    }
}
