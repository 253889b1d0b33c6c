-- Webhook deliveries (see shared/deployment/src/store/webhooks.rs): one row per state
-- change of a deployment whose spec names a webhook, written by the event relay in the
-- transaction that marks the change published, with its place on the event stream
-- (the entry id's two numbers) and its body (the event as on the stream). A
-- deployment's deliveries go one at a time, in stream order: the oldest waiting row
-- gets its `webhook` job (`job_id`) once no other webhook job of the deployment is
-- queued or running.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id UUID PRIMARY KEY,
    deployment_id UUID NOT NULL,
    stream_ms BIGINT NOT NULL,
    stream_seq BIGINT NOT NULL,
    event JSONB NOT NULL,
    job_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS webhook_deliveries_waiting ON webhook_deliveries (deployment_id, stream_ms, stream_seq) WHERE job_id IS NULL;
