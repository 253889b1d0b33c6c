-- Deployments (the seed's "events"): a named set of machines, each running a payload
-- container. States and their changes are defined in shared/src/deployment/mod.rs; every
-- change is a conditional update plus a deployment_events row, in one transaction.
-- Statements are idempotent (IF NOT EXISTS) and each runs in its own transaction.
CREATE TABLE IF NOT EXISTS deployments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 41),
    owner TEXT NOT NULL,
    provider TEXT NOT NULL CHECK (provider IN ('local', 'docker-machine')),
    spec JSONB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('provisioning', 'provisioned', 'deploying', 'deployed', 'failed', 'tearing_down', 'torn_down')),
    generation BIGINT NOT NULL DEFAULT 1 CHECK (generation >= 1),
    node_count BIGINT NOT NULL CHECK (node_count >= 1),
    deploy_after_provision BOOL NOT NULL DEFAULT true,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A name belongs to one live deployment at a time; torn down ones keep theirs as history.
CREATE UNIQUE INDEX IF NOT EXISTS deployments_live_name ON deployments (name) WHERE state <> 'torn_down';

CREATE INDEX IF NOT EXISTS deployments_name_created ON deployments (name, created_at);

-- Machines are named <deployment>-<n>; n is node_index, 1-based.
CREATE TABLE IF NOT EXISTS machines (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id UUID NOT NULL,
    node_index BIGINT NOT NULL CHECK (node_index >= 1),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'creating', 'ready', 'failed', 'removing', 'removed')),
    driver TEXT,
    engine_url TEXT,
    ip_address TEXT,
    ca_cert_path TEXT,
    client_cert_path TEXT,
    client_key_path TEXT,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (deployment_id, node_index)
);

-- One payload container per machine and spec generation.
CREATE TABLE IF NOT EXISTS containers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id UUID NOT NULL,
    machine_id UUID NOT NULL,
    generation BIGINT NOT NULL CHECK (generation >= 1),
    name TEXT NOT NULL,
    docker_id TEXT,
    image TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('creating', 'running', 'failed', 'removing', 'removed')),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (machine_id, generation)
);

CREATE INDEX IF NOT EXISTS containers_deployment ON containers (deployment_id);

-- History of deployments, machines and containers, like job_events for jobs.
CREATE TABLE IF NOT EXISTS deployment_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id UUID NOT NULL,
    subject TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    message TEXT,
    job_id UUID,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS deployment_events_deployment ON deployment_events (deployment_id, at);
