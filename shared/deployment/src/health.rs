//! Health checks: what a `health_check` job found on each node (its machine and its
//! payload container), and what is done about it ([`decide`]). The worker's handler
//! looks (engines through the Docker Engine API, the provider through docker-machine
//! when a machine looks wrong); the store records what it found and acts on the
//! decision in one transaction that locks the deployment row, with the next check of
//! the chain (see `store/health.rs`).
//!
//! A node is unhealthy when its engine does not answer, its machine is gone at the
//! provider, or its container is not running with the expected image and generation.
//! With more unhealthy nodes than the spec's `max_unhealthy` allows, nothing is
//! repaired and the deployment becomes `degraded`.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::spec::{MaxUnhealthy, RepairPolicy};

/// The health of a machine or a container, as the last check found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Not checked yet, or could not be told (the engine did not answer).
    Unknown,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Health {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Health::Healthy, Health::Unhealthy, Health::Unknown]
            .into_iter()
            .find(|health| health.as_str() == text)
            .ok_or_else(|| format!("unknown health {text:?}"))
    }
}

lc_shared::state_as_sql_text!(Health);

/// What is wrong with an unhealthy node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The engine answers but the container is not as expected. `restartable`: it
    /// exited or is missing, which a `deploy` of the current generation fixes (it
    /// starts an exited container and creates a missing one); a container with another
    /// image is only reported.
    Container { restartable: bool },
    /// The engine does not answer and the provider does not say the machine is gone.
    Unreachable,
    /// The provider says the machine is gone.
    MachineMissing,
}

/// What a check found on one node.
#[derive(Clone, Debug)]
pub struct NodeCheck {
    pub machine_id: Uuid,
    pub machine: String,
    pub node: i64,
    pub machine_health: Health,
    pub machine_reason: String,
    pub container_health: Health,
    pub container_reason: String,
    /// `None`: healthy.
    pub problem: Option<Problem>,
}

/// What a check does, decided from what it found and the spec's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every node is healthy.
    Healthy,
    /// More nodes are unhealthy than `max_unhealthy` allows: nothing is touched and the
    /// deployment is `degraded`.
    Degraded { unhealthy: i64, allowed: i64 },
    /// Repair: re-create these machines (nodes) and then deploy, or only deploy.
    Repair { reprovision: Vec<i64> },
    /// Unhealthy nodes that the policy does not (or cannot) repair: why.
    Report(String),
}

/// What to do about `checks` (one per node of a deployment of `nodes` nodes).
pub fn decide(
    policy: RepairPolicy,
    max_unhealthy: MaxUnhealthy,
    nodes: i64,
    checks: &[NodeCheck],
) -> Decision {
    let unhealthy: Vec<&NodeCheck> = checks.iter().filter(|c| c.problem.is_some()).collect();
    if unhealthy.is_empty() {
        return Decision::Healthy;
    }
    let allowed = max_unhealthy.allowed(nodes);
    if unhealthy.len() as i64 > allowed {
        return Decision::Degraded {
            unhealthy: unhealthy.len() as i64,
            allowed,
        };
    }
    let names = |wanted: fn(Problem) -> bool| -> Vec<String> {
        unhealthy
            .iter()
            .filter(|check| check.problem.is_some_and(wanted))
            .map(|check| check.machine.clone())
            .collect()
    };
    let unreachable = names(|problem| problem == Problem::Unreachable);
    let missing = names(|problem| problem == Problem::MachineMissing);
    let stuck = names(|problem| problem == Problem::Container { restartable: false });
    if policy == RepairPolicy::Report {
        return Decision::Report("repair policy is report: recorded only".into());
    }
    // A deploy visits every machine: it cannot run while an engine does not answer.
    if !unreachable.is_empty() {
        return Decision::Report(format!(
            "engine of {} does not answer (the provider does not say it is gone): not repairing until it does",
            unreachable.join(", ")
        ));
    }
    if !missing.is_empty() && policy == RepairPolicy::Restart {
        return Decision::Report(format!(
            "machine(s) {} gone at the provider: repair restart does not re-create machines (repair: reprovision does)",
            missing.join(", ")
        ));
    }
    if !stuck.is_empty() {
        return Decision::Report(format!(
            "container(s) on {} run something other than expected: not touched",
            stuck.join(", ")
        ));
    }
    let reprovision = unhealthy
        .iter()
        .filter(|check| check.problem == Some(Problem::MachineMissing))
        .map(|check| check.node)
        .collect();
    Decision::Repair { reprovision }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(node: i64, problem: Option<Problem>) -> NodeCheck {
        NodeCheck {
            machine_id: Uuid::new_v4(),
            machine: format!("demo-{node}"),
            node,
            machine_health: Health::Healthy,
            machine_reason: String::new(),
            container_health: Health::Healthy,
            container_reason: String::new(),
            problem,
        }
    }

    const EXITED: Option<Problem> = Some(Problem::Container { restartable: true });

    #[test]
    fn healthy_repaired_degraded_reported() {
        let max = MaxUnhealthy::Count(1);
        let all_good = [node(1, None), node(2, None), node(3, None)];
        assert_eq!(
            decide(RepairPolicy::Restart, max, 3, &all_good),
            Decision::Healthy
        );
        let one = [node(1, EXITED), node(2, None), node(3, None)];
        assert_eq!(
            decide(RepairPolicy::Restart, max, 3, &one),
            Decision::Repair {
                reprovision: vec![]
            }
        );
        let all_bad = [node(1, EXITED), node(2, EXITED), node(3, EXITED)];
        assert_eq!(
            decide(RepairPolicy::Restart, max, 3, &all_bad),
            Decision::Degraded {
                unhealthy: 3,
                allowed: 1
            }
        );
        assert!(matches!(
            decide(RepairPolicy::Report, max, 3, &one),
            Decision::Report(_)
        ));
    }

    #[test]
    fn missing_machines_are_reprovisioned_only_under_reprovision() {
        let max = MaxUnhealthy::Percent(100);
        let gone = [node(1, None), node(2, Some(Problem::MachineMissing))];
        assert_eq!(
            decide(RepairPolicy::Reprovision, max, 2, &gone),
            Decision::Repair {
                reprovision: vec![2]
            }
        );
        assert!(matches!(
            decide(RepairPolicy::Restart, max, 2, &gone),
            Decision::Report(_)
        ));
        assert!(matches!(
            decide(RepairPolicy::Report, max, 2, &gone),
            Decision::Report(_)
        ));
        let unreachable = [node(1, EXITED), node(2, Some(Problem::Unreachable))];
        assert!(matches!(
            decide(RepairPolicy::Reprovision, max, 2, &unreachable),
            Decision::Report(_)
        ));
    }
}
