-- Expiry: a deployment created with a `ttl` or `expires_at` is torn down at
-- `expires_at` by a delayed `teardown` job written in the creating transaction
-- (idempotency key `teardown-expiry:<deployment>:<expiry_generation>`). An extension
-- moves `expires_at`, counts `expiry_generation` up, cancels the old delayed job and
-- enqueues the next one, in one transaction; a delayed job of an older generation
-- finds itself superseded and does nothing. NULL: the deployment does not expire.
-- Statements are idempotent (IF NOT EXISTS) and each runs in its own transaction.
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS expiry_generation BIGINT NOT NULL DEFAULT 0 CHECK (expiry_generation >= 0);
