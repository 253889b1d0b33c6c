//! The deployment domain's outbox: `deployment_events` rows with a `to_state` that are
//! not on the event stream yet (`published_at` NULL, the partial index
//! `deployment_events_unpublished`), claimed and marked by the event relay in its own
//! transaction. The claim is the core's (see `lc_shared::store::claim_job_events`): a
//! read of the oldest, then a conditional update that marks them and waits for another
//! relay's uncommitted marks, so that relays take turns and each subject's changes keep
//! their order. A subject's rows are written after its row lock was taken
//! (`at` is `clock_timestamp()` at the insert), so a later change of a deployment,
//! machine or container is always newer. Deployment events are few, so the scan always
//! starts at the oldest end.

use super::*;

/// An unpublished change of a deployment, one of its machines or containers.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub deployment_id: Uuid,
    /// `None` only if the deployment row is gone.
    pub deployment_name: Option<String>,
    /// `deployment`, `machine NAME` or `container NAME`.
    pub subject: String,
    /// The machine's or container's id, when the subject is one that exists.
    pub subject_id: Option<Uuid>,
    pub from_state: Option<String>,
    pub to_state: String,
    pub message: Option<String>,
    pub job_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

impl DeploymentStore {
    /// Whether any change waits for the relay: one read of the partial index (the
    /// oldest waiting row rather than an `EXISTS`, which PostgreSQL may plan as a scan
    /// of the whole history: see `lc_shared::store::Store::job_events_pending`).
    pub async fn events_pending(&self) -> Result<bool> {
        Ok(self
            .query_row(
                "SELECT at FROM deployment_events
                 WHERE published_at IS NULL AND to_state IS NOT NULL
                 ORDER BY at LIMIT 1",
                &[],
                |_| (),
            )
            .await?
            .is_some())
    }
}

/// Claims up to `limit` unpublished changes, oldest first, in the relay's transaction:
/// reads them, marks them published (one statement) and returns those it marked.
pub async fn claim_deployment_events(tx: &Transaction<'_>, limit: i64) -> Result<Vec<OutboxEvent>> {
    const PICK: &str = "
SELECT e.id, e.deployment_id, d.name, e.subject, COALESCE(m.id, c.id), e.from_state,
       e.to_state, e.message, e.job_id, e.at
FROM deployment_events e
LEFT JOIN deployments d ON d.id = e.deployment_id
LEFT JOIN machines m ON m.deployment_id = e.deployment_id
    AND e.subject IN ('machine ' || m.name, 'machine_health ' || m.name)
LEFT JOIN containers c ON c.deployment_id = e.deployment_id
    AND e.subject IN ('container ' || c.name, 'container_health ' || c.name)
WHERE e.published_at IS NULL AND e.to_state IS NOT NULL
ORDER BY e.at
LIMIT $1";
    // Waits for another relay's uncommitted marks of the same rows, then skips them.
    const MARK: &str = "
UPDATE deployment_events SET published_at = now()
FROM UNNEST((SELECT $1::UUID[])) AS p(id)
WHERE deployment_events.id = p.id AND deployment_events.published_at IS NULL
RETURNING deployment_events.id";
    let statement = tx.prepare_cached(PICK).await?;
    let picked: Vec<OutboxEvent> = tx
        .query(&statement, &[&limit])
        .await?
        .iter()
        .map(|row| {
            Ok(OutboxEvent {
                id: row.try_get(0)?,
                deployment_id: row.try_get(1)?,
                deployment_name: row.try_get(2)?,
                subject: row.try_get(3)?,
                subject_id: row.try_get(4)?,
                from_state: row.try_get(5)?,
                to_state: row.try_get(6)?,
                message: row.try_get(7)?,
                job_id: row.try_get(8)?,
                at: row.try_get(9)?,
            })
        })
        .collect::<Result<_>>()?;
    if picked.is_empty() {
        return Ok(picked);
    }
    let ids: Vec<Uuid> = picked.iter().map(|event| event.id).collect();
    let statement = tx.prepare_cached(MARK).await?;
    let marked: std::collections::HashSet<Uuid> = tx
        .query(&statement, &[&ids])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(picked
        .into_iter()
        .filter(|event| marked.contains(&event.id))
        .collect())
}
