//! The deployment job kinds. Their payloads hold ids only: the spec lives in the
//! `deployments` row, and credentials live nowhere but in the workers' environment.

use std::time::Duration;

use super::{
    DeployPayload, MAX_NODES, ProvisionMachinePayload, ProvisionPayload, TEARDOWN_ATTEMPTS,
    TeardownPayload,
};
use crate::job::JobKind;
use crate::kind::JobType;

const MINUTE: u64 = 60;

/// Creates every machine of a deployment: fans out one `provision_machine` job per
/// machine; with `watch`, it is the deployment's provisioning watchdog.
pub struct Provision;

impl JobType for Provision {
    const KIND: JobKind = JobKind::Provision;
    type Payload = ProvisionPayload;
    const TIMEOUT: Duration = Duration::from_secs(45 * MINUTE);
    fn check(payload: &ProvisionPayload) -> Result<(), String> {
        if payload.watch.is_some_and(|watch| watch < 1) {
            return Err("watch must be at least 1".into());
        }
        Ok(())
    }
}

/// Creates one machine. Each docker-machine call has its own limit (--machine-timeout,
/// 10m); a machine takes a create plus a few short calls, maybe after a removal.
pub struct ProvisionMachine;

impl JobType for ProvisionMachine {
    const KIND: JobKind = JobKind::ProvisionMachine;
    type Payload = ProvisionMachinePayload;
    const TIMEOUT: Duration = Duration::from_secs(45 * MINUTE);
    fn check(payload: &ProvisionMachinePayload) -> Result<(), String> {
        if !(1..=MAX_NODES).contains(&payload.node) {
            return Err(format!("node must be between 1 and {MAX_NODES}"));
        }
        Ok(())
    }
}

/// Runs one spec generation's containers: pulls and starts on every machine.
pub struct Deploy;

impl JobType for Deploy {
    const KIND: JobKind = JobKind::Deploy;
    type Payload = DeployPayload;
    const TIMEOUT: Duration = Duration::from_secs(30 * MINUTE);
    fn check(payload: &DeployPayload) -> Result<(), String> {
        if payload.generation < 1 {
            return Err("generation must be at least 1".into());
        }
        Ok(())
    }
}

/// Removes a deployment's containers and machines: container stops plus one
/// docker-machine rm per machine. Each attempt may wait for running provision and
/// deploy jobs, so it has more attempts than other kinds.
pub struct Teardown;

impl JobType for Teardown {
    const KIND: JobKind = JobKind::Teardown;
    type Payload = TeardownPayload;
    const TIMEOUT: Duration = Duration::from_secs(30 * MINUTE);
    const MAX_ATTEMPTS: i64 = TEARDOWN_ATTEMPTS;
    fn check(payload: &TeardownPayload) -> Result<(), String> {
        if payload
            .reason
            .as_ref()
            .is_some_and(|reason| reason.len() > 1000)
        {
            return Err("reason must be at most 1000 characters".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use crate::job::{JobKind, NewJob};

    #[test]
    fn payloads_are_checked() {
        let kinds = crate::builtin::kinds();
        let check = |kind: JobKind, payload: serde_json::Value| {
            kinds.validate(&NewJob::new(kind, payload)).is_ok()
        };
        let id = Uuid::new_v4();
        assert!(check(JobKind::Provision, json!({"deployment_id": id})));
        assert!(check(
            JobKind::Provision,
            json!({"deployment_id": id, "watch": 2})
        ));
        assert!(!check(JobKind::Provision, json!({})));
        assert!(check(
            JobKind::ProvisionMachine,
            json!({"deployment_id": id, "node": 1})
        ));
        assert!(!check(
            JobKind::ProvisionMachine,
            json!({"deployment_id": id, "node": 0})
        ));
        assert!(!check(
            JobKind::Deploy,
            json!({"deployment_id": id, "generation": 1, "x": 1})
        ));
        assert!(!check(JobKind::Teardown, json!({"deployment_id": "nope"})));
    }
}
