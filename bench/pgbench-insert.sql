-- One transaction inserting one deployment-shaped row: the database-only baseline that
-- `slipway-load` is compared against (see bench/README.md). Table: bench/pgbench-setup.sql.
\set n random(1, 1000000000)
BEGIN;
INSERT INTO bench_deployments (id, environment_id, image, version, strategy, source_kind,
    source, request_reason, created_by, idempotency_key, next_wake_at)
VALUES (gen_random_uuid(), '00000000-0000-4000-8000-000000000001',
    'ghcr.io/acme/web:1.0.' || :n, '1.0.' || :n,
    '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}',
    'api', '{"kind": "api"}', 'bench', 'anonymous', gen_random_uuid()::text, now());
END;
