-- Events for upstream services (see shared/src/events.rs): the history tables are the
-- outbox. Every change already appends its row to `job_events` or `deployment_events`
-- in the statement or transaction that makes it; a transition row whose
-- `published_at` is NULL is an event not yet on the stream. The event relay claims
-- such rows in batches (oldest first, with a locking read), adds them to the stream,
-- sets `published_at` and commits.
--
-- Rows written before this migration are history, not news: the column is added with
-- the migration's time as its default (PostgreSQL stores that one value instead of
-- rewriting the table; CockroachDB backfills it), and the default is then dropped, so
-- rows written from then on start unpublished. Log lines (`to_state` NULL) are never
-- published and stay outside the partial indexes, which hold only what waits for the
-- relay: a few rows, at the right-hand end of a time-ordered key.
ALTER TABLE job_events ADD COLUMN IF NOT EXISTS published_at TIMESTAMPTZ DEFAULT now();

ALTER TABLE job_events ALTER COLUMN published_at DROP DEFAULT;

CREATE INDEX IF NOT EXISTS job_events_unpublished ON job_events (at) WHERE published_at IS NULL AND to_state IS NOT NULL;

ALTER TABLE deployment_events ADD COLUMN IF NOT EXISTS published_at TIMESTAMPTZ DEFAULT now();

ALTER TABLE deployment_events ALTER COLUMN published_at DROP DEFAULT;

CREATE INDEX IF NOT EXISTS deployment_events_unpublished ON deployment_events (at) WHERE published_at IS NULL AND to_state IS NOT NULL;
