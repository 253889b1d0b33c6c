//! Webhook deliveries: each published change of a deployment whose spec names a webhook
//! becomes a `webhook_deliveries` row, in the event relay's transaction (the one that
//! marks the change published, so a change gets its row exactly when it reaches the
//! stream), placed by its stream entry id. Deliveries are ordinary `webhook` jobs, one
//! at a time per deployment, in stream order:
//!
//! - [`advance_webhooks`] gives a deployment the job of its oldest waiting delivery,
//!   unless another webhook job of the deployment is queued or running;
//! - it runs when the relay records new deliveries, when a delivery ends (its handler,
//!   after a success or before giving up on its last attempt), and about once a second
//!   for deployments whose delivery ended otherwise (dead by lease expiry, cancelled).
//!
//! Each advance locks the deployment's row first (`FOR UPDATE`), so advances of one
//! deployment run one after the other, each reading (at read committed, after the lock)
//! what the previous one committed: two advances cannot both find no live job and start
//! two deliveries. The job's idempotency key is `webhook:<event id>`, so a replayed
//! advance makes it once, and its payload holds the event, so every retry sends the same
//! body with the same `webhook-id`.

use super::*;
use crate::{WebhookPayload, WebhookSpec};

/// A published change to deliver: its place on the stream and its body.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub event_id: Uuid,
    pub deployment_id: Uuid,
    /// The stream entry id (`<ms>-<seq>`) the change got.
    pub stream_ms: i64,
    pub stream_seq: i64,
    /// The event's wire JSON.
    pub event: String,
}

impl NewDelivery {
    /// The place of a stream entry id `<ms>-<seq>`; `None` for anything else.
    pub fn place(entry_id: &str) -> Option<(i64, i64)> {
        let (ms, seq) = entry_id.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    }
}

/// In the relay's transaction: records the deliveries of the changes whose deployment
/// names a webhook (others are dropped), then advances each of those deployments.
/// Returns the delivery jobs enqueued.
pub async fn queue_webhook_deliveries(
    tx: &Transaction<'_>,
    deliveries: &[NewDelivery],
) -> Result<Vec<Enqueued>> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let mut deployments: Vec<Uuid> = deliveries.iter().map(|d| d.deployment_id).collect();
    deployments.sort();
    deployments.dedup();
    let with_webhook: Vec<Uuid> = tx
        .query(
            "SELECT id FROM deployments WHERE id = ANY($1) AND spec->'webhook' IS NOT NULL ORDER BY id",
            &[&deployments],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let wanted: Vec<&NewDelivery> = deliveries
        .iter()
        .filter(|d| with_webhook.contains(&d.deployment_id))
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let event_ids: Vec<Uuid> = wanted.iter().map(|d| d.event_id).collect();
    let deployment_ids: Vec<Uuid> = wanted.iter().map(|d| d.deployment_id).collect();
    let ms: Vec<i64> = wanted.iter().map(|d| d.stream_ms).collect();
    let seq: Vec<i64> = wanted.iter().map(|d| d.stream_seq).collect();
    let events: Vec<&str> = wanted.iter().map(|d| d.event.as_str()).collect();
    // Bodies travel as TEXT[], each cast to JSONB here (CockroachDB takes no JSONB[]).
    tx.execute(
        "INSERT INTO webhook_deliveries (event_id, deployment_id, stream_ms, stream_seq, event)
         SELECT event_id, deployment_id, ms, seq, event::JSONB
         FROM UNNEST($1::UUID[], $2::UUID[], $3::INT8[], $4::INT8[], $5::TEXT[])
             AS t(event_id, deployment_id, ms, seq, event)
         ON CONFLICT (event_id) DO NOTHING",
        &[&event_ids, &deployment_ids, &ms, &seq, &events],
    )
    .await?;
    let mut enqueued = Vec::new();
    // In id order: a relay that locks several deployments always locks them in one order.
    for deployment_id in with_webhook {
        enqueued.extend(advance_webhooks(tx, deployment_id, None).await?);
    }
    Ok(enqueued)
}

/// Gives a deployment the job of its oldest waiting delivery, unless a webhook job of
/// the deployment other than `finished` (the delivery that just ended, still running)
/// is queued or running. Locks the deployment's row first (see the module's notes).
pub async fn advance_webhooks(
    tx: &Transaction<'_>,
    deployment_id: Uuid,
    finished: Option<Uuid>,
) -> Result<Option<Enqueued>> {
    let Some(row) = tx
        .query_opt(
            "SELECT spec->'webhook' FROM deployments WHERE id = $1 FOR UPDATE",
            &[&deployment_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let webhook: Option<serde_json::Value> = row.get(0);
    let webhook: Option<WebhookSpec> = webhook
        .filter(|value| !value.is_null())
        .map(serde_json::from_value)
        .transpose()
        .map_err(|err| {
            invalid(format!(
                "stored webhook of deployment {deployment_id}: {err}"
            ))
        })?;
    let Some(webhook) = webhook else {
        // An update took the webhook out of the spec: nothing is sent any more.
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE deployment_id = $1 AND job_id IS NULL",
            &[&deployment_id],
        )
        .await?;
        return Ok(None);
    };
    let live: i64 = tx
        .query_one(
            "SELECT count(*) FROM jobs
             WHERE group_id = $1 AND kind = $2 AND state = ANY($3) AND id <> $4",
            &[
                &deployment_id,
                &KindOf::<WebhookPayload>::KIND.as_str(),
                &vec![JobState::Queued.as_str(), JobState::Running.as_str()],
                &finished.unwrap_or(Uuid::nil()),
            ],
        )
        .await?
        .get(0);
    if live > 0 {
        return Ok(None);
    }
    let Some(next) = tx
        .query_opt(
            "SELECT event_id, event FROM webhook_deliveries
             WHERE deployment_id = $1 AND job_id IS NULL
             ORDER BY stream_ms, stream_seq LIMIT 1",
            &[&deployment_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let event_id: Uuid = next.get(0);
    let event: serde_json::Value = next.get(1);
    // The deployment's jobs' queue (its workers serve it), the default one before any.
    let queue: String = tx
        .query_opt(
            "SELECT queue FROM jobs WHERE group_id = $1 ORDER BY created_at DESC LIMIT 1",
            &[&deployment_id],
        )
        .await?
        .map(|row| row.get(0))
        .unwrap_or_else(|| lc_shared::job::DEFAULT_QUEUE.to_owned());
    let origin = Origin::new(None, queue, Priority::Normal);
    let payload = WebhookPayload {
        deployment_id,
        event_id,
        url: webhook.url,
        secret_env: webhook.secret_env,
        event,
    };
    let new = job(
        &payload,
        deployment_id,
        &origin,
        format!("webhook:{event_id}"),
    )?
    .with_max_attempts(webhook.max_attempts);
    let enqueued = enqueue_one(tx, new).await?;
    tx.execute(
        "UPDATE webhook_deliveries SET job_id = $2 WHERE event_id = $1",
        &[&event_id, &enqueued.id],
    )
    .await?;
    Ok(Some(enqueued))
}

impl DeploymentStore {
    /// After the delivery job `finished` ended its work (delivered, or giving up on its
    /// last attempt): the deployment's next delivery, in a transaction of its own.
    pub async fn next_webhook(
        &self,
        deployment_id: Uuid,
        finished: Uuid,
    ) -> Result<Option<Enqueued>> {
        // Read committed: the advance locks the deployment's row before it reads.
        in_transaction!(self, Isolation::ReadCommitted, tx => {
            advance_webhooks(tx, deployment_id, Some(finished)).await
        })
    }

    /// Deployments with waiting deliveries and none under way (their last delivery
    /// died by lease expiry, or was cancelled) get their next one. Returns the jobs
    /// enqueued. The look is one read of the waiting deliveries' partial index; the
    /// advance decides again under the deployment's lock.
    pub async fn resume_webhooks(&self) -> Result<Vec<Enqueued>> {
        let waiting: Vec<Uuid> = self
            .query_rows(
                "SELECT DISTINCT w.deployment_id FROM webhook_deliveries w
                 WHERE w.job_id IS NULL
                   AND NOT EXISTS (SELECT 1 FROM jobs j
                                   WHERE j.group_id = w.deployment_id AND j.kind = $1
                                     AND j.state = ANY($2))",
                &[
                    &KindOf::<WebhookPayload>::KIND.as_str(),
                    &vec![JobState::Queued.as_str(), JobState::Running.as_str()],
                ],
                |row| row.get(0),
            )
            .await?;
        let mut enqueued = Vec::new();
        for deployment_id in waiting {
            // Read committed: the advance locks the deployment's row before it reads.
            let next = in_transaction!(self, Isolation::ReadCommitted, tx => {
                advance_webhooks(tx, deployment_id, None).await
            })?;
            enqueued.extend(next);
        }
        Ok(enqueued)
    }
}
