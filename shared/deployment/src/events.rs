//! The deployment domain's events on the core's event stream (see `lc_shared::events`):
//! every change of a deployment, of its machines and of its containers, from the
//! `deployment_events` rows each change appends in its transaction. A worker's registry
//! adds [`DeploymentEvents`] as an event source, the way it adds the domain's kinds.
//!
//! | `type` | subject |
//! | --- | --- |
//! | `deployment.state_changed` | the deployment |
//! | `deployment.machine.state_changed` | one of its machines |
//! | `deployment.container.state_changed` | one of its payload containers |
//! | `deployment.machine_health.state_changed` | a machine's health (`healthy`, `unhealthy`, `unknown`), as a health check found it |
//! | `deployment.container_health.state_changed` | a payload container's health |
//!
//! Besides the core's fields (`v`, `id`, `type`, `at`, `group_id` = the deployment's
//! id, `from`, `to`, `message`), each carries `deployment: {id, name}`,
//! `subject: {kind, name, id}` and, when a job made the change, `job_id`. The same JSON
//! is the body of the deployment's webhook requests.

use lc_shared::events::{Event, EventSource, SourceFuture};
use lc_shared::store::{Enqueued, Store};
use serde_json::json;

use crate::DeploymentStore;
use crate::store::{NewDelivery, OutboxEvent, claim_deployment_events, queue_webhook_deliveries};

/// The type of a change of the deployment itself.
pub const DEPLOYMENT_STATE_CHANGED: &str = "deployment.state_changed";
/// The type of a change of one of its machines.
pub const MACHINE_STATE_CHANGED: &str = "deployment.machine.state_changed";
/// The type of a change of one of its containers.
pub const CONTAINER_STATE_CHANGED: &str = "deployment.container.state_changed";

/// The deployment domain's event source: its changes, and the webhook deliveries that
/// follow from them (recorded in the relay's transaction, see the store's `webhooks`).
pub struct DeploymentEvents {
    store: DeploymentStore,
}

impl DeploymentEvents {
    pub fn new(store: Store) -> DeploymentEvents {
        DeploymentEvents {
            store: DeploymentStore::new(store),
        }
    }
}

/// The type of a change of a machine's health (see `crate::health`).
pub const MACHINE_HEALTH_CHANGED: &str = "deployment.machine_health.state_changed";
/// The type of a change of a container's health.
pub const CONTAINER_HEALTH_CHANGED: &str = "deployment.container_health.state_changed";

/// The wire event of a deployment change.
pub fn event(row: &OutboxEvent) -> Event {
    let (kind, name) = match row.subject.split_once(' ') {
        Some((kind, name)) => (kind, name),
        None => (
            row.subject.as_str(),
            row.deployment_name.as_deref().unwrap_or_default(),
        ),
    };
    let kind_type = match kind {
        "deployment" => DEPLOYMENT_STATE_CHANGED.to_owned(),
        "machine" => MACHINE_STATE_CHANGED.to_owned(),
        "container" => CONTAINER_STATE_CHANGED.to_owned(),
        "machine_health" => MACHINE_HEALTH_CHANGED.to_owned(),
        "container_health" => CONTAINER_HEALTH_CHANGED.to_owned(),
        other => format!("deployment.{other}.state_changed"),
    };
    let subject_id = if kind == "deployment" {
        Some(row.deployment_id)
    } else {
        row.subject_id
    };
    let mut event = Event::new(
        row.id,
        kind_type,
        row.at,
        row.from_state.clone(),
        row.to_state.clone(),
    )
    .with_group(Some(row.deployment_id))
    .with_message(row.message.as_deref())
    .with_detail(
        "deployment",
        json!({"id": row.deployment_id, "name": row.deployment_name}),
    )
    .with_detail(
        "subject",
        json!({"kind": kind, "name": name, "id": subject_id}),
    );
    if let Some(job_id) = row.job_id {
        event = event.with_detail("job_id", json!(job_id));
    }
    event
}

impl EventSource for DeploymentEvents {
    fn name(&self) -> &'static str {
        "deployments"
    }

    fn pending<'a>(&'a self, _store: &'a Store) -> SourceFuture<'a, bool> {
        Box::pin(self.store.events_pending())
    }

    fn claim<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'a>,
        limit: i64,
    ) -> SourceFuture<'a, Vec<Event>> {
        Box::pin(async move {
            let rows = claim_deployment_events(tx, limit).await?;
            Ok(rows.iter().map(event).collect())
        })
    }

    fn published<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'a>,
        events: &'a [Event],
        entry_ids: &'a [String],
    ) -> SourceFuture<'a, Vec<Enqueued>> {
        Box::pin(async move {
            let deliveries: Vec<NewDelivery> = events
                .iter()
                .zip(entry_ids)
                .filter_map(|(event, entry_id)| {
                    let (stream_ms, stream_seq) = NewDelivery::place(entry_id)?;
                    Some(NewDelivery {
                        event_id: event.id,
                        deployment_id: event.group_id?,
                        stream_ms,
                        stream_seq,
                        event: event.to_json(),
                    })
                })
                .collect();
            queue_webhook_deliveries(tx, &deliveries).await
        })
    }

    fn tick<'a>(&'a self, _store: &'a Store) -> SourceFuture<'a, Vec<Enqueued>> {
        Box::pin(async move { self.store.resume_webhooks().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_machine_change_on_the_wire() {
        let row = OutboxEvent {
            id: Uuid::from_u128(3),
            deployment_id: Uuid::from_u128(1),
            deployment_name: Some("demo".into()),
            subject: "machine demo-2".into(),
            subject_id: Some(Uuid::from_u128(2)),
            from_state: Some("creating".into()),
            to_state: "ready".into(),
            message: Some("ready".into()),
            job_id: None,
            at: chrono::DateTime::parse_from_rfc3339("2026-12-06T21:30:00Z")
                .expect("a time")
                .with_timezone(&chrono::Utc),
        };
        let value: serde_json::Value = serde_json::from_str(&event(&row).to_json()).expect("JSON");
        assert_eq!(
            value,
            json!({
                "v": 1, "id": "00000000-0000-0000-0000-000000000003",
                "type": "deployment.machine.state_changed", "at": "2026-12-06T21:30:00Z",
                "group_id": "00000000-0000-0000-0000-000000000001",
                "from": "creating", "to": "ready", "message": "ready",
                "deployment": {"id": "00000000-0000-0000-0000-000000000001", "name": "demo"},
                "subject": {"kind": "machine", "name": "demo-2",
                            "id": "00000000-0000-0000-0000-000000000002"}
            })
        );
        let deployment = OutboxEvent {
            subject: "deployment".into(),
            subject_id: None,
            job_id: Some(Uuid::from_u128(9)),
            ..row
        };
        let event = event(&deployment);
        assert_eq!(event.kind, DEPLOYMENT_STATE_CHANGED);
        assert_eq!(event.detail["subject"]["name"], "demo");
        assert_eq!(
            event.detail["subject"]["id"],
            "00000000-0000-0000-0000-000000000001"
        );
        assert_eq!(
            event.detail["job_id"],
            "00000000-0000-0000-0000-000000000009"
        );
    }

    #[test]
    fn stream_places_parse() {
        assert_eq!(
            NewDelivery::place("1700000000000-5"),
            Some((1700000000000, 5))
        );
        assert_eq!(NewDelivery::place("nonsense"), None);
    }
}
