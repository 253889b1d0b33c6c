-- A job's own time limit, set by its producer (`lc enqueue --timeout`, the inbox's
-- "timeout"); NULL means its kind's default. A handler past its limit is stopped and
-- the attempt fails as retryable.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS timeout_ms BIGINT CHECK (timeout_ms > 0);
