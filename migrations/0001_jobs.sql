-- Jobs: the truth about every piece of work. State values and transitions are
-- defined in shared/src/state.rs. Statements are idempotent (IF NOT EXISTS) and each
-- runs in its own transaction, as CockroachDB wants for DDL.
CREATE TABLE IF NOT EXISTS jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority BIGINT NOT NULL DEFAULT 1 CHECK (priority IN (0, 1, 2)),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    payload JSONB NOT NULL,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL CHECK (max_attempts >= 1),
    run_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dispatched BOOL NOT NULL DEFAULT false,
    idempotency_key TEXT,
    deployment_id UUID,
    lease_owner UUID,
    lease_expires_at TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);

-- The same key always names the same job. Partial: jobs without a key cost no entry.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Due work, by queue, highest priority and oldest first (the database claim path).
CREATE INDEX IF NOT EXISTS jobs_queued_due ON jobs (queue, priority, run_at) WHERE state = 'queued';

-- Queued jobs without a hint yet (delayed, retried, swept): the sweeper's dispatch scan.
CREATE INDEX IF NOT EXISTS jobs_undispatched ON jobs (run_at) WHERE state = 'queued' AND NOT dispatched;

-- Running jobs by lease expiry: the sweeper's lease scan and `lc stuck`.
CREATE INDEX IF NOT EXISTS jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';

-- Finished jobs by age: retention (`lc jobs purge`). Live states are left out so that
-- the hot transitions (queued -> running -> queued) do not maintain it.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, updated_at) WHERE state IN ('succeeded', 'dead', 'cancelled');

CREATE INDEX IF NOT EXISTS jobs_deployment ON jobs (deployment_id) WHERE deployment_id IS NOT NULL;

-- Every transition (to_state set) and log line (to_state NULL) of every job.
-- Keyed by job first, so one index serves both uniqueness and "a job's history".
CREATE TABLE IF NOT EXISTS job_events (
    job_id UUID NOT NULL,
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    from_state TEXT,
    to_state TEXT,
    attempt BIGINT NOT NULL,
    worker_id UUID,
    message TEXT,
    PRIMARY KEY (job_id, id)
);

-- Worker processes, for `lc workers`.
CREATE TABLE IF NOT EXISTS workers (
    id UUID PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    queues TEXT NOT NULL,
    concurrency BIGINT NOT NULL,
    version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at TIMESTAMPTZ
);

-- Per-queue settings (pause).
CREATE TABLE IF NOT EXISTS queue_settings (
    queue TEXT PRIMARY KEY,
    paused BOOL NOT NULL DEFAULT false,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Test and drill support: one row per handler effect (sleep/noop with "record": true),
-- so tests can prove no attempt's effect happened twice.
CREATE TABLE IF NOT EXISTS job_effects (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id UUID NOT NULL,
    attempt BIGINT NOT NULL,
    worker_id UUID,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS job_effects_job ON job_effects (job_id);
