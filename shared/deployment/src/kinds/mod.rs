//! The built-in job kinds, one file each: the kind (its name, payload check and
//! defaults, [`JobType`]), its payload's link back to it ([`KindPayload`]), and, with
//! the `worker` feature, its handler ([`lc_worker::Handler`]) and everything only that
//! handler does. Payloads hold ids only: the spec lives in the `deployments` row, and
//! credentials live nowhere but in the workers' environment. The payload types are the
//! crate's (`crate::ProvisionPayload`, ...): the store makes jobs from them without
//! naming this module, whose handlers use the store.
//!
//! A new built-in kind is one file here (declared with `mod` and re-exported below)
//! plus one line in [`Builtin`]. Its payload may live in its file too, unless the store
//! makes its jobs; then the payload is the crate's and its file says
//! `impl KindPayload for ThePayload`.
//!
//! How the deployment handlers stay apart (details in each file):
//! - every change to a deployment's fate locks its row first, in one transaction with
//!   the jobs it implies (see the crate's store);
//! - teardown moves the deployment to `tearing_down` first, which stops the fan-out,
//!   `provision_machine` (before and after its create) and `deploy` (before each
//!   machine) from making anything new; then it cancels their queued jobs and waits for
//!   running ones, so nothing is created behind its back; then it removes containers,
//!   machines, and whatever else the deployment's docker-machine store lists.

mod deploy;
mod health_check;
mod provision;
mod provision_machine;
mod teardown;
mod teardown_machine;
mod webhook;

pub use deploy::Deploy;
#[cfg(feature = "worker")]
pub use deploy::PARALLEL_MACHINES;
pub use health_check::HealthCheck;
pub use provision::Provision;
pub use provision_machine::ProvisionMachine;
pub use teardown::Teardown;
pub use teardown_machine::TeardownMachine;
pub use webhook::Webhook;

use lc_shared::builtin::{Noop, Sleep};
use lc_shared::kind::{JobType, KindError, Kinds};

/// Every kind a LaunchControl process knows, in one list: the core's and the
/// deployment kinds. Producers register it with [`kinds`], workers register the
/// handlers of the same tuple ([`registry`]). A new built-in kind is one line here.
pub type Builtin = (
    Noop,
    Sleep,
    Provision,
    ProvisionMachine,
    Deploy,
    Teardown,
    TeardownMachine,
    Webhook,
    HealthCheck,
);

/// The built-in kinds as a registry; an error names the kind that did not register.
pub fn kinds() -> Result<Kinds, KindError> {
    Kinds::empty().with_list::<Builtin>()
}

/// Every built-in kind ([`Builtin`]: the core's and the deployment kinds) with its
/// handler, the deployment handlers' state, and the deployments' changes as events
/// ([`DeploymentEvents`](crate::events::DeploymentEvents), beside the jobs' own that
/// every worker's relay publishes).
#[cfg(feature = "worker")]
pub fn registry(state: crate::runtime::DeploymentWorker) -> Result<lc_worker::Registry, KindError> {
    let events = crate::events::DeploymentEvents::new(state.store.jobs().clone());
    Ok(lc_worker::Registry::default()
        .with_list::<Builtin>()?
        .with_event_source(events)
        .with_state(state))
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
        TeardownMachine::KIND,
        Webhook::KIND,
        HealthCheck::KIND,
    ]
    .iter()
    .any(|own| own.as_str() == kind)
}

/// Minutes, for the kinds' time limits.
const MINUTE: u64 = 60;

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use lc_shared::job::{JobKind, NewJob};

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
                "teardown_machine",
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
