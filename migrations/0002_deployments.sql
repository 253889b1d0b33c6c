-- Deployments (the seed's "events"): a named set of machines, each running a payload
-- container. States change only through conditional updates with an event row.
CREATE TABLE IF NOT EXISTS deployments (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    spec JSONB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('provisioning', 'provisioned', 'deploying', 'deployed', 'failed', 'tearing_down', 'torn_down')),
    generation BIGINT NOT NULL DEFAULT 1,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS machines (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    deployment_id UUID NOT NULL,
    name TEXT NOT NULL UNIQUE,
    node_index BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'creating', 'ready', 'failed', 'removing', 'removed')),
    engine_url TEXT,
    ip_address TEXT,
    ca_cert_path TEXT,
    client_cert_path TEXT,
    client_key_path TEXT,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS machines_deployment ON machines (deployment_id, node_index);

CREATE TABLE IF NOT EXISTS containers (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    machine_id UUID NOT NULL,
    deployment_id UUID NOT NULL,
    name TEXT NOT NULL UNIQUE,
    docker_id TEXT,
    image TEXT NOT NULL,
    generation BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'failed', 'removed')),
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
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
