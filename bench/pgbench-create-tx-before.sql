-- Before (kept for comparison; not run by the script): the statements Slipway runs for one
-- POST .../deployments with an Idempotency-Key, replayed by pgbench against the real tables
-- with the HTTP server taken out. Same order and shape as slipway-api's idempotency::run and
-- slipway-engine's intake::record_deployment (commit 056e66f): BEGIN, 10 statements, COMMIT.
-- Needs -D env_id=<uuid> -D cluster_id=<uuid> of bench/load (the script looks them up).
\set n random(1, 9000000000000000000)
BEGIN;
SELECT pg_try_advisory_xact_lock(:n);
SELECT request_hash, response_status, response_body, response_location, expires_at
    FROM idempotency_keys
    WHERE scope = 'anonymous POST /v1/apps/bench/environments/load/deployments'
      AND key = 'k' || :n::text;
SELECT e.id, e.cluster_id, e.spec, e.revision FROM environments e
    JOIN apps a ON a.id = e.app_id WHERE a.name = 'bench' AND e.name = 'load'
    FOR SHARE;
INSERT INTO deployments (id, environment_id, cluster_id, image, version, strategy, rollout,
        status, source_kind, source, request_reason, created_by, idempotency_key, traceparent,
        next_wake_at)
    VALUES (md5('d' || :n::text)::uuid, :env_id::uuid, :cluster_id::uuid,
        'ghcr.io/acme/web:2.0.' || :n::text, '2.0.' || :n::text,
        '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}',
        jsonb_build_object('release', jsonb_build_object('image',
                'ghcr.io/acme/web:2.0.' || :n::text, 'version', '2.0.' || :n::text),
            'approval', '{"required": false, "distinct_approver": false}'::jsonb,
            'strategy', '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}'::jsonb,
            'workload', '{"name": "bench", "port": 8080, "replicas": 4, "container": "bench"}'::jsonb,
            'namespace', 'bench', 'progress_deadline', '10m'),
        'queued', 'api', '{"kind": "api"}', 'bench', 'anonymous', 'k' || :n::text, NULL, now());
SELECT pg_notify('slipway_wake', md5('d' || :n::text)::uuid::text);
UPDATE deployments SET last_event_seq = last_event_seq + 1, updated_at = now()
    WHERE id = md5('d' || :n::text)::uuid RETURNING last_event_seq;
INSERT INTO deployment_events (deployment_id, seq, kind, actor, message, data)
    VALUES (md5('d' || :n::text)::uuid, 1, 'queued', 'anonymous',
        'rolling strategy deployment of ghcr.io/acme/web:2.0.' || :n::text || ' (2.0.'
            || :n::text || ') to bench/load queued',
        jsonb_build_object('image', 'ghcr.io/acme/web:2.0.' || :n::text,
            'version', '2.0.' || :n::text, 'strategy', 'rolling', 'source', 'api'));
SELECT pg_notify('slipway_events', md5('d' || :n::text)::uuid::text || ':1');
SELECT d.id, a.name AS app, e.name AS environment, d.image, d.version,
        d.strategy, d.status::text AS status, d.phase, d.step, d.outcome::text AS outcome,
        d.serving_health::text AS serving_health, d.serving_version, d.failure_code,
        d.failure_message, d.request_reason, d.source, d.created_by, d.created_at, d.updated_at
    FROM deployments d
    JOIN environments e ON e.id = d.environment_id
    JOIN apps a ON a.id = e.app_id
    WHERE d.id = md5('d' || :n::text)::uuid;
INSERT INTO idempotency_keys
        (scope, key, request_hash, response_status, response_body, response_location, expires_at)
    VALUES ('anonymous POST /v1/apps/bench/environments/load/deployments', 'k' || :n::text,
        sha256(('k' || :n::text)::bytea), 201,
        jsonb_build_object('id', md5('d' || :n::text)::uuid, 'app', 'bench', 'step', NULL,
            'image', 'ghcr.io/acme/web:2.0.' || :n::text, 'phase', NULL, 'reason', NULL,
            'source', '{"kind": "api"}'::jsonb, 'status', 'queued', 'outcome', NULL,
            'serving', '{"health": "unknown", "version": null}'::jsonb,
            'version', '2.0.' || :n::text,
            'strategy', '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}'::jsonb,
            'created_at', now(), 'created_by', 'anonymous', 'updated_at', now(),
            'environment', 'load', 'request_reason', 'bench'),
        '/v1/deployments/' || md5('d' || :n::text)::uuid::text, now() + interval '24 hours');
COMMIT;
