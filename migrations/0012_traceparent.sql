-- Traces across the queue (see shared/src/telemetry/job_trace.rs): the W3C
-- `traceparent` of the span that enqueued a job (`00-<trace id>-<span id>-<flags>`),
-- so that the worker that claims it continues that trace. NULL when the producer
-- exported no traces: adding a nullable column without a default rewrites nothing, on
-- PostgreSQL and CockroachDB alike.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS traceparent TEXT;
