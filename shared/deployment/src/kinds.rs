//! The deployment job kinds. Their payloads hold ids only: the spec lives in the
//! `deployments` row, and credentials live nowhere but in the workers' environment.

use std::time::Duration;

use super::{
    DeployPayload, HealthCheckPayload, MAX_NODES, ProvisionMachinePayload, ProvisionPayload,
    TEARDOWN_ATTEMPTS, TeardownPayload, WebhookPayload, WebhookSpec,
};
use lc_shared::builtin::{Noop, Sleep};
use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindError, Kinds};

/// Every kind a LaunchControl process knows, in one list: the core's and the
/// deployment kinds. Producers register it with [`kinds`], workers register the
/// handlers of the same tuple. A new built-in kind is one line here.
pub type Builtin = (
    Noop,
    Sleep,
    Provision,
    ProvisionMachine,
    Deploy,
    Teardown,
    Webhook,
    HealthCheck,
);

/// The built-in kinds as a registry; an error names the kind that did not register.
pub fn kinds() -> Result<Kinds, KindError> {
    Kinds::empty().with_list::<Builtin>()
}

/// Whether jobs of this kind act on a deployment named by id in their payload (all the
/// domain's kinds): only `Deployments` makes them for a caller, who may not own the
/// deployment an id names; a caller limited to an owner does not enqueue them itself.
pub fn acts_on_deployments(kind: &str) -> bool {
    [
        Provision::KIND,
        ProvisionMachine::KIND,
        Deploy::KIND,
        Teardown::KIND,
        Webhook::KIND,
    ]
    .iter()
    .any(|own| own.as_str() == kind)
}

const MINUTE: u64 = 60;

/// Creates every machine of a deployment: fans out one `provision_machine` job per
/// machine; with `watch`, it is the deployment's provisioning watchdog.
pub struct Provision;

impl JobType for Provision {
    const KIND: JobKind = JobKind::named("provision");
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
    const KIND: JobKind = JobKind::named("provision_machine");
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
    const KIND: JobKind = JobKind::named("deploy");
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
    const KIND: JobKind = JobKind::named("teardown");
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
        if payload.expiry.is_some_and(|generation| generation < 1) {
            return Err("expiry must be at least 1".into());
        }
        Ok(())
    }
}

/// Delivers one state change of a deployment to its webhook: a JSON POST of the event
/// (as on the event stream), signed per Standard Webhooks 1.0 with the same
/// `webhook-id` (the event's id) on every attempt. Retried with backoff; a deployment's
/// deliveries run one at a time, in the order of the event stream (see the store's
/// `webhooks`). Its attempts come from the spec (`webhook.max_attempts`).
pub struct Webhook;

impl JobType for Webhook {
    const KIND: JobKind = JobKind::named("webhook");
    type Payload = WebhookPayload;
    const MAX_ATTEMPTS: i64 = crate::spec::webhook::DEFAULT_WEBHOOK_ATTEMPTS;
    /// One POST (its own limit is far shorter) and two short transactions.
    const TIMEOUT: Duration = Duration::from_secs(2 * MINUTE);
    fn check(payload: &WebhookPayload) -> Result<(), String> {
        let spec = WebhookSpec {
            url: payload.url.clone(),
            secret_env: payload.secret_env.clone(),
            max_attempts: 1,
        };
        spec.validate().map_err(|err| err.to_string())?;
        let id = payload.event.get("id").and_then(|id| id.as_str());
        if id != Some(payload.event_id.to_string().as_str()) {
            return Err("event must be an event object whose id is event_id".into());
        }
        Ok(())
    }
}

/// Checks a deployed deployment's machines and containers, records their health, and
/// repairs what its spec's policy says (see `crate::health`). Its jobs carry the
/// concurrency key [`HealthCheck::concurrency_key`] of limit 1: one check of a
/// deployment runs at a time, across every worker. Many attempts: a chain link that
/// died would end the deployment's periodic checks.
pub struct HealthCheck;

impl HealthCheck {
    /// The key every check of a deployment carries (limit 1).
    pub fn concurrency_key(deployment_id: uuid::Uuid) -> String {
        format!("health:{deployment_id}")
    }
}

impl JobType for HealthCheck {
    const KIND: JobKind = JobKind::named("health_check");
    type Payload = HealthCheckPayload;
    const MAX_ATTEMPTS: i64 = 25;
    /// One engine call or two per machine, a provider status call per unhealthy one.
    const TIMEOUT: Duration = Duration::from_secs(10 * MINUTE);
    fn check(payload: &HealthCheckPayload) -> Result<(), String> {
        if payload.chain.is_some_and(|link| link < 1) {
            return Err("chain must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use lc_shared::job::NewJob;

    #[test]
    fn the_builtin_kinds_register() {
        let kinds = kinds().expect("built-in kinds register");
        assert_eq!(
            kinds.names(),
            vec![
                "deploy",
                "health_check",
                "noop",
                "provision",
                "provision_machine",
                "sleep",
                "teardown",
                "webhook"
            ]
        );
    }

    #[test]
    fn payloads_are_checked() {
        let kinds = kinds().expect("built-in kinds register");
        let check = |kind: JobKind, payload: serde_json::Value| {
            kinds.validate(&NewJob::new(kind, payload)).is_ok()
        };
        let id = Uuid::new_v4();
        assert!(check(Provision::KIND, json!({"deployment_id": id})));
        assert!(check(
            Provision::KIND,
            json!({"deployment_id": id, "watch": 2})
        ));
        assert!(!check(Provision::KIND, json!({})));
        assert!(check(
            ProvisionMachine::KIND,
            json!({"deployment_id": id, "node": 1})
        ));
        assert!(!check(
            ProvisionMachine::KIND,
            json!({"deployment_id": id, "node": 0})
        ));
        assert!(check(
            ProvisionMachine::KIND,
            json!({"deployment_id": id, "node": 2, "repair": Uuid::new_v4()})
        ));
        assert!(check(HealthCheck::KIND, json!({"deployment_id": id})));
        assert!(check(
            HealthCheck::KIND,
            json!({"deployment_id": id, "chain": 3})
        ));
        assert!(!check(
            HealthCheck::KIND,
            json!({"deployment_id": id, "chain": 0})
        ));
        assert!(!check(
            Deploy::KIND,
            json!({"deployment_id": id, "generation": 1, "x": 1})
        ));
        assert!(!check(Teardown::KIND, json!({"deployment_id": "nope"})));
        assert!(check(
            Teardown::KIND,
            json!({"deployment_id": id, "reason": "expired", "expiry": 2})
        ));
        assert!(!check(
            Teardown::KIND,
            json!({"deployment_id": id, "expiry": 0})
        ));
        let event = Uuid::new_v4();
        let webhook = |url: &str, event_id: Uuid| {
            json!({"deployment_id": id, "event_id": event_id, "url": url,
                   "secret_env": "LC_WEBHOOK_SECRET", "event": {"id": event, "v": 1}})
        };
        assert!(check(
            Webhook::KIND,
            webhook("http://127.0.0.1:9/hook", event)
        ));
        assert!(!check(
            Webhook::KIND,
            webhook("ftp://127.0.0.1/hook", event)
        ));
        assert!(!check(
            Webhook::KIND,
            webhook("http://127.0.0.1:9/hook", Uuid::new_v4())
        ));
    }
}
