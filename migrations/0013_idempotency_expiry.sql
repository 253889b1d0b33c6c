-- The HTTP API's idempotency keys are remembered for `lc serve --idempotency-ttl`
-- (24 h by default) and then pruned, oldest first, in small batches: this index finds
-- them without reading the whole table.
CREATE INDEX IF NOT EXISTS api_idempotency_keys_created_at ON api_idempotency_keys (created_at);
