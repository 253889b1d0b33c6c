-- Concurrency keys: jobs that share a key run at most the key's limit at once, across
-- every worker (see shared/src/concurrency.rs). A job's key never changes after it is
-- enqueued; NULL means no key, and such jobs are claimed as before.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS concurrency_key TEXT;

-- One row per key: its limit (NULL: none) and the row every claim of the key's jobs
-- locks first (`SELECT ... FOR UPDATE`), so that claims of one key take turns and each
-- counts the key's running jobs after the one before committed (store/claim.rs). Made
-- by the enqueue of the key's first job, or when a limit is set.
CREATE TABLE IF NOT EXISTS concurrency_keys (
    concurrency_key TEXT PRIMARY KEY,
    max_running BIGINT CHECK (max_running >= 1),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A key's waiting jobs, per queue, highest priority and oldest first: what a claim of
-- the key takes next. Partial: jobs without a key cost no entry.
CREATE INDEX IF NOT EXISTS jobs_keyed_queued ON jobs (concurrency_key, queue, priority, run_at) WHERE state = 'queued' AND concurrency_key IS NOT NULL;

-- A key's running jobs: what a claim counts against the limit.
CREATE INDEX IF NOT EXISTS jobs_keyed_running ON jobs (concurrency_key) WHERE state = 'running' AND concurrency_key IS NOT NULL;
