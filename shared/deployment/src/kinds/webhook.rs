//! `webhook`: delivers one state change of a deployment to its webhook (see
//! `crate::runtime::webhook` for the request and the store's `webhooks` for the order). The
//! secret is read from this worker's environment at each attempt, by the name the
//! payload holds; its value goes into the signature and nowhere else.
//!
//! When the delivery is done (delivered, or failed on its last attempt) the handler
//! starts the deployment's next delivery before it returns, so the deployment's
//! deliveries follow each other without waiting for a sweep. Starting the next one can
//! fail (the database is away) without failing this job: the event relay resumes
//! deployments whose deliveries stalled about once a second.

use std::time::Duration;

use lc_shared::job::JobKind;
use lc_shared::kind::{JobType, KindPayload};

use super::MINUTE;
use crate::spec::webhook::DEFAULT_WEBHOOK_ATTEMPTS;
use crate::{WebhookPayload, WebhookSpec};

/// Delivers one state change of a deployment to its webhook: a JSON POST of the event
/// (as on the event stream), signed per Standard Webhooks 1.0 with the same
/// `webhook-id` (the event's id) on every attempt. Retried with backoff; a deployment's
/// deliveries run one at a time, in the order of the event stream (see the store's
/// `webhooks`). Its attempts come from the spec (`webhook.max_attempts`).
pub struct Webhook;

impl JobType for Webhook {
    const KIND: JobKind = JobKind::named("webhook");
    type Payload = WebhookPayload;
    const MAX_ATTEMPTS: i64 = DEFAULT_WEBHOOK_ATTEMPTS;
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

impl KindPayload for WebhookPayload {
    type Kind = Webhook;
}

#[cfg(feature = "worker")]
mod handler {
    use std::time::Instant;

    use crate::WebhookPayload;
    use crate::spec::webhook::webhook_key;
    use lc_shared::store::error_chain;
    use lc_worker::{Handler, JobContext, JobError};

    use super::Webhook;
    use crate::runtime::handling::{dispatch, env, is_final};
    use crate::runtime::webhook::{DeliveryError, display_url};

    /// What a worker does with a `webhook` job (see the file's doc).
    impl Handler for Webhook {
        async fn run(ctx: &JobContext, payload: WebhookPayload) -> Result<(), JobError> {
            let delivered = deliver(ctx, &payload).await;
            let done = match &delivered {
                Ok(()) => true,
                Err(err) => is_final(ctx, err),
            };
            if done {
                next(ctx, &payload).await;
            }
            delivered
        }
    }

    /// One signed POST of the event.
    async fn deliver(ctx: &JobContext, payload: &WebhookPayload) -> Result<(), JobError> {
        let worker = env(ctx)?;
        let secret = std::env::var(&payload.secret_env).map_err(|_| {
            // Another worker may have it: retryable.
            JobError::retryable(format!(
                "the webhook secret variable {} is not set on this worker",
                payload.secret_env
            ))
        })?;
        let key = webhook_key(&secret).map_err(|reason| {
            JobError::fatal(format!(
                "the webhook secret variable {} {reason}",
                payload.secret_env
            ))
        })?;
        let body = serde_json::to_vec(&payload.event)
            .map_err(|err| JobError::fatal_from("the event cannot be written as JSON", err))?;
        let id = payload.event_id.to_string();
        let started = Instant::now();
        let posted = tokio::select! {
            _ = ctx.cancelled() => return Err(JobError::Cancelled),
            posted = worker.webhooks.post(&payload.url, &id, &key, body) => posted,
        };
        ctx.metrics()
            .external_call("webhook", "post", started.elapsed(), posted.is_err());
        match posted {
            Ok(status) => {
                ctx.log(&format!(
                    "delivered to {} ({status})",
                    display_url(&payload.url)
                ))
                .await;
                Ok(())
            }
            Err(err) => Err(delivery_error(err)),
        }
    }

    fn delivery_error(err: DeliveryError) -> JobError {
        let what = "webhook delivery failed";
        if err.is_permanent() {
            JobError::fatal_from(what, err)
        } else {
            JobError::retryable_from(what, err)
        }
    }

    /// Starts the deployment's next delivery (this job's own is done).
    async fn next(ctx: &JobContext, payload: &WebhookPayload) {
        let Ok(worker) = env(ctx) else { return };
        match worker
            .store
            .next_webhook(payload.deployment_id, ctx.job().id)
            .await
        {
            Ok(Some(enqueued)) => dispatch(ctx, std::slice::from_ref(&enqueued)).await,
            Ok(None) => {}
            Err(err) => tracing::warn!(
                error = %error_chain(&err),
                "could not start the next webhook delivery; the event relay resumes it"
            ),
        }
    }
}
