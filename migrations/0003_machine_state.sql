-- Machines belong to the deployment, not to a worker's disk: the docker-machine state
-- of every machine (its store entry: config.json and the files beside it) and the
-- deployment's certificates live here, so that any worker on any host can create,
-- deploy to or remove any machine. Secrets are sealed (see shared/src/secrets.rs):
-- `tls_sealed` holds the CA key and the client certificate and key, `store_entry` the
-- machine's whole entry (drivers keep tokens and SSH keys in it). `ca_cert` is public.
ALTER TABLE deployments ADD COLUMN IF NOT EXISTS ca_cert TEXT;

ALTER TABLE deployments ADD COLUMN IF NOT EXISTS tls_sealed BYTEA;

ALTER TABLE machines ADD COLUMN IF NOT EXISTS store_entry BYTEA;

-- A teardown that could not confirm every machine gone ends `leftovers` (listed by
-- `lc stuck` until `lc deploy ack`); such a machine is `abandoned`. The old CHECKs are
-- named deployments_state_check / machines_state_check on PostgreSQL and check_state on
-- CockroachDB; the new ones have names of their own.
ALTER TABLE deployments DROP CONSTRAINT IF EXISTS deployments_state_check;

ALTER TABLE deployments DROP CONSTRAINT IF EXISTS check_state;

ALTER TABLE deployments ADD CONSTRAINT deployments_state_known CHECK (state IN ('provisioning', 'provisioned', 'deploying', 'deployed', 'failed', 'tearing_down', 'leftovers', 'torn_down'));

ALTER TABLE machines DROP CONSTRAINT IF EXISTS machines_state_check;

ALTER TABLE machines DROP CONSTRAINT IF EXISTS check_state;

ALTER TABLE machines ADD CONSTRAINT machines_state_known CHECK (state IN ('pending', 'creating', 'ready', 'failed', 'removing', 'removed', 'abandoned'));
