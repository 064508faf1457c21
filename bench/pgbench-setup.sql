-- Scratch table for bench/pgbench-insert.sql: shaped like a `deployments` row as Slipway
-- writes it on creation (uuid key, text image/version, jsonb strategy/source, timestamps, the
-- partial "due work" index and the per-environment listing index). Recreated on every run.
DROP TABLE IF EXISTS bench_deployments;
CREATE TABLE bench_deployments (
    id               uuid        NOT NULL PRIMARY KEY,
    environment_id   uuid        NOT NULL,
    image            text        NOT NULL,
    version          text        NOT NULL,
    strategy         jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'queued',
    source_kind      text        NOT NULL,
    source           jsonb       NOT NULL,
    request_reason   text,
    created_by       text        NOT NULL,
    idempotency_key  text,
    next_wake_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bench_deployments_environment_id_idx ON bench_deployments (environment_id, id DESC);
CREATE INDEX bench_deployments_due_idx ON bench_deployments (next_wake_at)
    WHERE status IN ('queued', 'running', 'paused', 'rolling_back');
