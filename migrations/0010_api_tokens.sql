-- The HTTP API's callers (see producer/src/tokens.rs and producer/http): one row per
-- token, holding only the SHA-256 of the token (tokens are 32 random bytes, so a fast
-- hash cannot be searched backwards) and a short prefix of it that `lc tokens ls`
-- shows so that an operator can tell tokens apart. A token speaks for its `owner`:
-- it sees and changes only that owner's jobs and deployments, unless it is `admin`.
CREATE TABLE IF NOT EXISTS api_tokens (
    id UUID PRIMARY KEY,
    owner TEXT NOT NULL,
    admin BOOL NOT NULL DEFAULT false,
    token_sha256 BYTEA NOT NULL,
    prefix TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_sha256 ON api_tokens (token_sha256);

-- The owner of a job enqueued through the HTTP API (NULL for jobs of the library, the
-- CLI, the inbox and the jobs the deployment domain makes).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS owner TEXT;

CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at DESC, id DESC) WHERE owner IS NOT NULL;

-- Idempotency keys of the HTTP API's POSTs that create something: the first request
-- with a key records the SHA-256 of its body, so that the same key with another body
-- is refused (422) instead of answered with what the first made. The jobs or the
-- deployment themselves are made once by the core's own guards (job idempotency keys,
-- the deployment's unique live name).
CREATE TABLE IF NOT EXISTS api_idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    request_sha256 BYTEA NOT NULL,
    -- What the first request made, once it made it (a deployment's id), so that a
    -- repeat answers with it even after it is gone.
    result_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);
