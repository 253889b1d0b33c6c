//! Deployments: a named set of machines (`<deployment>-<n>`), each running a payload
//! container. This crate is the deployment domain on top of the queue core
//! (`lc-shared`, `lc-producer`, and with the `worker` feature `lc-worker`), through
//! their public API only; the core knows nothing of it. It holds what the producer and
//! the worker agree on, and (feature `worker`) what the worker does:
//!
//! - [`spec`]: the deployment spec (JSON or YAML) and its validation
//! - the states of deployments, machines and containers, and which changes exist; the
//!   kinds' payloads, each naming its kind ([`lc_shared::kind::KindPayload`])
//! - [`kinds`]: the `provision`, `provision_machine`, `deploy`, `teardown`, `webhook`
//!   and `health_check` kinds, one file each with its handler (feature `worker`), and
//!   [`kinds::Builtin`], the one list of every built-in kind
//! - names, labels and redaction helpers; [`docker_machine`]: the arguments of every
//!   docker-machine call, for the worker that runs them and the plans that show them
//! - [`DeploymentStore`]: the SQL of the `deployments`, `machines`, `containers` and
//!   `deployment_events` tables
//! - [`client`]: deployments through the library ([`Deployments`]): create, update,
//!   tear down, extend the expiry, plan; read one, the list, its history; wait for a
//!   state; what needs an operator
//! - [`plan`]: what a create or an update would do ([`plan::Plan`]), for dry runs
//! - [`health`]: what a health check found on a machine, and the check's outcome
//! - [`events`]: the domain's changes as events on the core's event stream
//!   ([`events::DeploymentEvents`], an event source a worker registers), and the
//!   webhook deliveries that follow from them
//! - `runtime` (feature `worker`): what the handlers run on: the docker-machine driver
//!   and its scratch stores, the Docker Engine API client, TLS material, signed webhook
//!   requests, the handlers' shared state (`runtime::DeploymentWorker`) and settings
//! - `cli` (feature `worker`): the `lc-worker` command (`cli::main_with`)
//!
//! From the top down (`tests/integration/layering.rs` checks that no module uses one
//! that uses it back): `cli`, `kinds`, `runtime`, then `client`, `plan`, `events`,
//! `records`, `store`, and the leaves (`spec`, `health`, `docker_machine`, this file).
//! The store makes the kinds' jobs from their payloads, so it never names `kinds`.
//!
//! ```text
//!                 join (all machines ready)        deploy job           all containers up
//!  provisioning ───────────────────────────▶ provisioned ──────▶ deploying ──────────────▶ deployed
//!       │                                         │                 │  ▲                      │
//!       │ machine failed for good                 │                 │  └──── lc deploy update ┘
//!       ▼                                         │                 ▼
//!     failed ◀────────────────────────────────────┼──── deploy failed for good
//!       │                                         │
//!       └──────────── teardown (any state but torn_down) ──▶ tearing_down ──▶ torn_down
//!                                                                   │            ▲
//!                                     a machine could not be removed ▼            │ lc deploy ack
//!                                                               leftovers ────────┘
//! ```

#[cfg(feature = "worker")]
pub mod cli;
pub mod client;
pub mod docker_machine;
pub mod events;
pub mod health;
pub mod kinds;
pub mod plan;
mod records;
#[cfg(feature = "worker")]
pub mod runtime;
pub mod spec;
mod store;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use client::{
    Attention, DeploymentError, DeploymentOptions, DeploymentView, DeploymentWait, Deployments,
    WaitOutcome,
};
pub use plan::Plan;
pub use records::{AckOutcome, DeploymentAttention, Fence};
pub use spec::{
    CaEnv, Expiry, FileSpec, FlagValue, MAX_TTL, NetworkMode, NodeOverride, Nodes, Payload,
    Provider, PullPolicy, RegistryCredentialsEnv, RepairPolicy, RestartPolicy, Spec, SpecError,
    Timeouts, WebhookSpec,
};
pub use store::{
    CheckRequest, ContainerRow, CreateOutcome, DeployStart, DeploymentEventRow, DeploymentRow,
    DeploymentStore, DeploymentSummary, Endpoint, ExtendOutcome, FanOut, HealthOutcome,
    HealthStart, MachineRemoval, MachineRow, MachineStart, Origin, ReadyOutcome, TEARDOWN_ATTEMPTS,
    TeardownRequest, TeardownStart, UpdateBase, UpdateOutcome, WatchOutcome,
};

/// Container labels every LaunchControl container carries; teardown finds containers
/// by them, and a retry adopts what an earlier attempt started.
pub const LABEL_DEPLOYMENT: &str = "lc.deployment";
pub const LABEL_DEPLOYMENT_NAME: &str = "lc.deployment.name";
pub const LABEL_MACHINE: &str = "lc.machine";
pub const LABEL_NODE: &str = "lc.node";
pub const LABEL_JOB: &str = "lc.job";
pub const LABEL_GENERATION: &str = "lc.generation";

/// Checks a deployment name: `^[a-z][a-z0-9-]{0,40}$`. It becomes part of machine
/// names, container names and docker-machine arguments.
pub fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first_ok && rest_ok && name.len() <= 41 {
        Ok(())
    } else {
        Err(format!(
            "invalid deployment name {name:?}: use 1 to 41 characters from a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// The machine of node `node` (1-based) of a deployment.
pub fn machine_name(deployment: &str, node: i64) -> String {
    format!("{deployment}-{node}")
}

/// The container of a machine for one spec generation. Deterministic, so that a retry
/// finds (and adopts) what an earlier attempt created.
pub fn container_name(machine: &str, generation: i64) -> String {
    format!("lc-{machine}-g{generation}")
}

macro_rules! string_states {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|state| state.as_str() == s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)))
            }
        }

        lc_shared::state_as_sql_text!($name);
    };
}

string_states! {
    /// Where a deployment is in its life (see the diagram at the top of this module).
    DeploymentState {
        Provisioning => "provisioning",
        Provisioned => "provisioned",
        Deploying => "deploying",
        Deployed => "deployed",
        Degraded => "degraded",
        Failed => "failed",
        TearingDown => "tearing_down",
        Leftovers => "leftovers",
        TornDown => "torn_down",
    }
}

impl DeploymentState {
    /// The states a deployment may be in for a change to `self` to apply. The store
    /// binds these into its conditional updates.
    pub fn reachable_from(self) -> &'static [DeploymentState] {
        use DeploymentState::*;
        match self {
            Provisioning => &[],
            Provisioned => &[Provisioning],
            Deploying => &[Provisioned, Deploying, Deployed, Failed, Degraded],
            Deployed => &[Deploying, Degraded],
            Degraded => &[Deployed],
            Failed => &[Provisioning, Provisioned, Deploying],
            TearingDown => &[
                Provisioning,
                Provisioned,
                Deploying,
                Deployed,
                Degraded,
                Failed,
                TearingDown,
                Leftovers,
            ],
            Leftovers => &[TearingDown],
            TornDown => &[TearingDown, Leftovers],
        }
    }

    pub fn from_strs(self) -> Vec<&'static str> {
        self.reachable_from()
            .iter()
            .map(|state| state.as_str())
            .collect()
    }
}

string_states! {
    /// A machine: `pending` until its `provision_machine` job starts, `creating` while
    /// docker-machine runs, `ready` once its engine endpoint is recorded; `removed` by
    /// teardown, or `abandoned` when its store entry was broken and docker-machine could
    /// not remove it (its cloud resource may still exist).
    MachineState {
        Pending => "pending",
        Creating => "creating",
        Ready => "ready",
        Failed => "failed",
        Removing => "removing",
        Removed => "removed",
        Abandoned => "abandoned",
    }
}

string_states! {
    /// A payload container of one spec generation on one machine.
    ContainerState {
        Creating => "creating",
        Running => "running",
        Failed => "failed",
        Removing => "removing",
        Removed => "removed",
    }
}

/// Payload of a `provision` job: fan out one `provision_machine` job per machine. With
/// `watch`, it is the deployment's watchdog instead (see `kinds/provision.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionPayload {
    pub deployment_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<i64>,
}

/// Payload of a `provision_machine` job: create node `node` (1-based). With `repair`
/// (the id of the `health_check` job that asked for it), it re-creates a
/// machine of a deployed deployment that is gone at the provider: the machine is
/// removed (its store entry and whatever the provider has left) and created again,
/// then a `deploy` of the current generation runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionMachinePayload {
    pub deployment_id: Uuid,
    pub node: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Uuid>,
}

/// Payload of a `health_check` job. With `chain`, it is link `chain` of the
/// deployment's periodic checks: when done, it enqueues link `chain + 1` one
/// interval later (in the transaction that records what it found). Without, it is a
/// check asked for now (`lc deploy check`), which records and repairs but does not
/// continue the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckPayload {
    pub deployment_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<i64>,
}

/// Payload of a `deploy` job: run spec generation `generation` on every machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployPayload {
    pub deployment_id: Uuid,
    pub generation: i64,
}

/// Payload of a `teardown` job. With `expiry`, it is the delayed teardown of that
/// expiry generation of the deployment: when it comes due, it does nothing if the
/// deployment is torn down already, its expiry was moved since (a later generation),
/// or another teardown is under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownPayload {
    pub deployment_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<i64>,
}

/// Payload of a `teardown_machine` job: remove one machine of a deployment that is
/// tearing down. Its `teardown` makes one per machine that is not gone yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownMachinePayload {
    pub deployment_id: Uuid,
    pub machine_id: Uuid,
}

/// Payload of a `webhook` job: POST the event `event` (its id is `event_id`) to `url`,
/// signed with the secret in the worker's environment variable `secret_env`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPayload {
    pub deployment_id: Uuid,
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: Uuid,
    pub url: String,
    /// The name of the variable, never its value.
    pub secret_env: String,
    /// The request body: the event as it is on the event stream.
    pub event: serde_json::Value,
}

/// Most nodes one deployment may have: fleets of a few hundred machines are common (a
/// chain's validators, a test network); each is a row and a job, so a thousand is cheap.
pub const MAX_NODES: i64 = 1000;

/// Key names whose values are secrets: shown as `***` by `lc jobs show`.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    [
        "token",
        "secret",
        "password",
        "passwd",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// Replaces the values of secret-looking keys, at any depth.
pub fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if is_secret_key(key) && (inner.is_string() || inner.is_number()) {
                    *inner = serde_json::Value::String("***".into());
                } else {
                    redact_secrets(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// Replaces every occurrence of each secret value in `text` with `***`. Longest values
/// first, so that a secret containing another is replaced whole.
pub fn redact_values(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut text = text.to_owned();
    for secret in secrets {
        if text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// At most `max` bytes of `text` (cut at a character boundary), with a note saying how
/// much was left out.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [{} more bytes]", &text[..cut], text.len() - cut)
}

impl DeploymentStore {
    /// Whether a deployment has this id.
    pub async fn has_deployment(&self, id: uuid::Uuid) -> lc_shared::store::Result<bool> {
        let found = self
            .query_row("SELECT 1 FROM deployments WHERE id = $1", &[&id], |_| ())
            .await?;
        Ok(found.is_some())
    }

    /// The id of the deployment with this name: the live one, else the newest.
    pub async fn deployment_id(&self, name: &str) -> lc_shared::store::Result<Option<uuid::Uuid>> {
        self.query_row(
            "SELECT id FROM deployments WHERE name = $1
             ORDER BY (state <> $2) DESC, created_at DESC LIMIT 1",
            &[&name, &DeploymentState::TornDown.as_str()],
            |row| row.get(0),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(validate_name("demo").is_ok());
        assert!(validate_name("a").is_ok());
        assert!(validate_name("web-2").is_ok());
        assert!(validate_name(&"a".repeat(41)).is_ok());
        assert!(validate_name(&"a".repeat(42)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("2web").is_err());
        assert!(validate_name("Web").is_err());
        assert!(validate_name("web_1").is_err());
        assert!(validate_name("web;rm -rf /").is_err());
        assert_eq!(machine_name("demo", 3), "demo-3");
        assert_eq!(container_name("demo-3", 2), "lc-demo-3-g2");
    }

    #[test]
    fn states_round_trip_and_teardown_reaches_everything_live() {
        for state in DeploymentState::ALL {
            assert_eq!(state.as_str().parse::<DeploymentState>(), Ok(*state));
        }
        for state in DeploymentState::ALL {
            if *state != DeploymentState::TornDown {
                assert!(
                    DeploymentState::TearingDown
                        .reachable_from()
                        .contains(state)
                );
            }
        }
    }

    #[test]
    fn the_end_of_a_teardown_is_torn_down_or_leftovers_until_acknowledged() {
        use DeploymentState::*;
        assert_eq!(Leftovers.reachable_from(), &[TearingDown]);
        assert_eq!(TornDown.reachable_from(), &[TearingDown, Leftovers]);
        // A leftovers deployment can be torn down again (an operator fixed the cause).
        assert!(TearingDown.reachable_from().contains(&Leftovers));
        // Nothing comes back from torn_down; only deploying may be reached again and again.
        for state in DeploymentState::ALL {
            assert!(
                !state.reachable_from().contains(&TornDown),
                "{state} from torn_down"
            );
        }
        assert!(Deploying.reachable_from().contains(&Deployed));
        assert!(!Provisioned.reachable_from().contains(&Deployed));
    }

    #[test]
    fn degraded_comes_from_deployed_and_leaves_for_deployed_deploying_or_teardown() {
        use DeploymentState::*;
        assert_eq!(Degraded.reachable_from(), &[Deployed]);
        assert!(Deployed.reachable_from().contains(&Degraded));
        assert!(Deploying.reachable_from().contains(&Degraded));
        assert!(TearingDown.reachable_from().contains(&Degraded));
        assert!(!Degraded.reachable_from().contains(&Deploying));
    }

    #[test]
    fn machines_leave_by_removal_or_abandonment_from_any_live_state() {
        use MachineState::*;
        for to in [Removed, Abandoned] {
            let from = to.reachable_from();
            for live in [Pending, Creating, Ready, Failed, Removing] {
                assert!(from.contains(&live), "{to} from {live}");
            }
            assert!(!from.contains(&Removed) && !from.contains(&Abandoned));
        }
        assert_eq!(Ready.reachable_from(), vec![Pending, Creating]);
        assert!(Pending.reachable_from().is_empty());
    }

    #[test]
    fn redaction() {
        let secrets = vec![
            "s3cr3t-token".to_owned(),
            "s3cr3t".to_owned(),
            String::new(),
        ];
        assert_eq!(
            redact_values("token=s3cr3t-token other=s3cr3t", &secrets),
            "token=*** other=***"
        );
        assert_eq!(redact_values("nothing here", &secrets), "nothing here");
        let mut value = json!({"AccessToken": "abc", "nested": [{"password": 3}], "name": "x"});
        redact_secrets(&mut value);
        assert_eq!(
            value,
            json!({"AccessToken": "***", "nested": [{"password": "***"}], "name": "x"})
        );
        assert_eq!(truncate_text("héllo", 2), "h… [5 more bytes]");
        assert_eq!(truncate_text("short", 10), "short");
    }
}
