-- Foundation schema: clusters, apps, environments, deployments, their events and commands,
-- and idempotency keys. Constraints are named so the store can map violations to API errors.

CREATE TYPE cluster_kind AS ENUM ('kubernetes', 'in_cluster', 'simulated');

CREATE TABLE clusters (
    id              uuid        NOT NULL,
    name            text        NOT NULL,
    kind            cluster_kind NOT NULL,
    kubeconfig_path text,
    context         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT clusters_pkey PRIMARY KEY (id),
    CONSTRAINT clusters_name_key UNIQUE (name),
    CONSTRAINT clusters_kubeconfig_matches_kind
        CHECK ((kind = 'kubernetes') = (kubeconfig_path IS NOT NULL))
);

CREATE TABLE apps (
    id          uuid        NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL DEFAULT '',
    revision    bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT apps_pkey PRIMARY KEY (id),
    CONSTRAINT apps_name_key UNIQUE (name)
);

CREATE TABLE environments (
    id          uuid        NOT NULL,
    app_id      uuid        NOT NULL,
    name        text        NOT NULL,
    cluster_id  uuid        NOT NULL,
    -- The validated EnvironmentSpec (namespace, workload, strategy, policy) as the API took it.
    spec        jsonb       NOT NULL,
    revision    bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT environments_pkey PRIMARY KEY (id),
    CONSTRAINT environments_app_name_key UNIQUE (app_id, name),
    CONSTRAINT environments_app_fkey FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE,
    CONSTRAINT environments_cluster_fkey FOREIGN KEY (cluster_id) REFERENCES clusters (id) ON DELETE RESTRICT
);

CREATE TYPE deployment_status AS ENUM (
    'queued', 'running', 'paused', 'rolling_back',
    'succeeded', 'failed', 'rolled_back', 'cancelled', 'superseded'
);
CREATE TYPE deployment_outcome AS ENUM (
    'promoted', 'aborted', 'rolled_back', 'superseded', 'failed', 'cancelled'
);
CREATE TYPE serving_health AS ENUM ('healthy', 'degraded', 'unknown');
CREATE TYPE source_kind AS ENUM ('api', 'github', 'gitlab', 'slack', 'cli');

CREATE TABLE deployments (
    id               uuid              NOT NULL,
    environment_id   uuid              NOT NULL,
    image            text              NOT NULL,
    version          text              NOT NULL,
    strategy         jsonb             NOT NULL,
    status           deployment_status NOT NULL DEFAULT 'queued',
    phase            text,
    step             integer,
    outcome          deployment_outcome,
    serving_health   serving_health    NOT NULL DEFAULT 'unknown',
    serving_version  text,
    failure_code     text,
    failure_message  text,
    request_reason   text,
    source_kind      source_kind       NOT NULL,
    source           jsonb             NOT NULL,
    created_by       text              NOT NULL,
    idempotency_key  text,
    traceparent      text,
    last_event_seq   bigint            NOT NULL DEFAULT 0,
    -- Engine bookkeeping (used from the engine issue on): lease, fencing epoch and next wake-up.
    lease_owner      text,
    lease_expires_at timestamptz,
    epoch            bigint            NOT NULL DEFAULT 0,
    next_wake_at     timestamptz,
    state            jsonb             NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz       NOT NULL DEFAULT now(),
    updated_at       timestamptz       NOT NULL DEFAULT now(),
    CONSTRAINT deployments_pkey PRIMARY KEY (id),
    CONSTRAINT deployments_environment_fkey FOREIGN KEY (environment_id)
        REFERENCES environments (id) ON DELETE CASCADE,
    CONSTRAINT deployments_failure_has_message
        CHECK ((failure_code IS NULL) = (failure_message IS NULL)),
    CONSTRAINT deployments_outcome_only_when_terminal
        CHECK (outcome IS NULL OR status IN ('succeeded', 'failed', 'rolled_back', 'cancelled', 'superseded'))
);

-- At most one active deployment per environment: the database, not the code, enforces it.
CREATE UNIQUE INDEX deployments_one_active_per_environment
    ON deployments (environment_id)
    WHERE status IN ('running', 'paused', 'rolling_back');
-- Listing newest first, optionally by environment or status.
CREATE INDEX deployments_environment_id_idx ON deployments (environment_id, id DESC);
CREATE INDEX deployments_status_id_idx ON deployments (status, id DESC);
-- Due work for the engine.
CREATE INDEX deployments_due_idx ON deployments (next_wake_at)
    WHERE status IN ('queued', 'running', 'paused', 'rolling_back');

CREATE TABLE deployment_events (
    deployment_id uuid        NOT NULL,
    seq           bigint      NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    kind          text        NOT NULL,
    actor         text        NOT NULL,
    message       text        NOT NULL,
    data          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT deployment_events_pkey PRIMARY KEY (deployment_id, seq),
    CONSTRAINT deployment_events_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE,
    CONSTRAINT deployment_events_seq_positive CHECK (seq > 0)
);

CREATE TYPE command_kind AS ENUM (
    'promote', 'approve', 'pause', 'resume', 'abort', 'rollback', 'retry', 'skip_step'
);

CREATE TABLE commands (
    id              uuid         NOT NULL,
    deployment_id   uuid         NOT NULL,
    kind            command_kind NOT NULL,
    actor           text         NOT NULL,
    reason          text,
    idempotency_key text,
    created_at      timestamptz  NOT NULL DEFAULT now(),
    consumed_at     timestamptz,
    CONSTRAINT commands_pkey PRIMARY KEY (id),
    CONSTRAINT commands_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE
);
CREATE INDEX commands_pending_idx ON commands (deployment_id, created_at) WHERE consumed_at IS NULL;

-- A stored response per (scope, key): scope is the principal, method and route of the request.
CREATE TABLE idempotency_keys (
    scope             text        NOT NULL,
    key               text        NOT NULL,
    request_hash      bytea       NOT NULL,
    response_status   smallint    NOT NULL,
    response_body     jsonb       NOT NULL,
    response_location text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
