-- Health and repair (see shared/deployment/src/health.rs): a `health_check` job per
-- deployment looks at every machine's engine and container each `health_interval_ms`
-- (chained: each check enqueues the next in the transaction that records its result;
-- `health_chain` is the sequence number of the chain's current link, so a second chain
-- can never start). What it finds is kept per machine and per container (`health`:
-- healthy, unhealthy or unknown before the first check; the reason; when), and the
-- deployment's last check in `health_checked_at` / `health_reason`. The spec's policy
-- is copied into `repair` (restart, reprovision or report) and `max_unhealthy` (a
-- count like `1`, or a percent like `34%`). Past `max_unhealthy` a deployment is
-- `degraded` (a new state: the CHECK is replaced by one of a new name, as in 0003).
-- Statements are idempotent (IF NOT EXISTS) and each runs in its own transaction.
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS health_interval_ms BIGINT NOT NULL DEFAULT 60000 CHECK (health_interval_ms >= 1);

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS repair TEXT NOT NULL DEFAULT 'restart' CHECK (repair IN ('restart', 'reprovision', 'report'));

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS max_unhealthy TEXT NOT NULL DEFAULT '100%';

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS health_chain BIGINT NOT NULL DEFAULT 0;

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS health_checked_at TIMESTAMPTZ;

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS health_reason TEXT;

ALTER TABLE machines ADD COLUMN IF NOT EXISTS health TEXT NOT NULL DEFAULT 'unknown' CHECK (health IN ('healthy', 'unhealthy', 'unknown'));

ALTER TABLE machines ADD COLUMN IF NOT EXISTS health_reason TEXT;

ALTER TABLE machines ADD COLUMN IF NOT EXISTS health_checked_at TIMESTAMPTZ;

ALTER TABLE containers ADD COLUMN IF NOT EXISTS health TEXT NOT NULL DEFAULT 'unknown' CHECK (health IN ('healthy', 'unhealthy', 'unknown'));

ALTER TABLE containers ADD COLUMN IF NOT EXISTS health_reason TEXT;

ALTER TABLE containers ADD COLUMN IF NOT EXISTS health_checked_at TIMESTAMPTZ;

ALTER TABLE deployments DROP CONSTRAINT IF EXISTS deployments_state_known;

ALTER TABLE deployments ADD CONSTRAINT deployments_state_health CHECK (state IN ('provisioning', 'provisioned', 'deploying', 'deployed', 'degraded', 'failed', 'tearing_down', 'leftovers', 'torn_down'));
