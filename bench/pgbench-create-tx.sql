-- Diagnostic baseline (bench/run-create.sh phase d): the statement Slipway runs for one
-- POST .../deployments with an Idempotency-Key (the environment cached, the key new),
-- replayed by pgbench against the real tables with the HTTP server taken out. Same shape as
-- slipway-store's deployments::record: one autocommit statement, no BEGIN/COMMIT. The API
-- sends the NOTIFYs afterwards, batched (crates/engine/src/notify.rs), so `woken` is off
-- here as it is there ($29 = false).
-- (The statement sequence before the one-statement create is in pgbench-create-tx-before.sql.)
-- Needs -D env_id=<uuid> -D cluster_id=<uuid> -D env_rev=<revision> of bench/load (the script
-- looks them up). (No `:` directly before a letter or digit in literals: pgbench would take it
-- for a variable.)
\set n random(1, 9000000000000000000)
WITH env AS (
    SELECT e.id, e.revision = :env_rev AND e.id = :env_id::uuid AS current
    FROM environments e JOIN apps a ON a.id = e.app_id
    WHERE a.name = 'bench' AND e.name = 'load'
    FOR KEY SHARE
),
target AS (SELECT id FROM env WHERE current),
key AS (
    INSERT INTO idempotency_keys AS k (scope, key, request_hash, response_status,
        response_body, response_location, expires_at)
    SELECT 'anonymous POST /v1/apps/bench/environments/load/deployments', 'k' || :n::text,
        sha256(('k' || :n::text)::bytea), 201,
        ('{"id": "' || md5('d' || :n::text)::uuid::text || '","app": "bench","environment": "load",'
         || '"image": "ghcr.io/acme/web:2.0.' || :n::text || '","version": "2.0.' || :n::text || '",'
         || '"strategy": {"type": "rolling","max_surge": "25%","max_unavailable": 0},'
         || '"status": "queued","phase": null,"step": null,"outcome": null,'
         || '"serving": {"health": "unknown","version": null},"reason": null,'
         || '"request_reason": "bench","source": {"kind": "api"},"created_by": "anonymous",'
         || '"created_at": ' || to_json(now())::text || ',"updated_at": '
         || to_json(now())::text || '}')::jsonb,
        '/v1/deployments/' || md5('d' || :n::text)::uuid::text, now() + interval '24 hours'
    FROM target
    ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
        response_status = excluded.response_status, response_body = excluded.response_body,
        response_location = excluded.response_location, created_at = now(),
        expires_at = excluded.expires_at
      WHERE k.expires_at <= now()
    RETURNING 1
),
go AS (SELECT id FROM target WHERE EXISTS (SELECT FROM key)),
dep AS (
    INSERT INTO deployments (id, environment_id, cluster_id, image, version, strategy,
        rollout, status, source_kind, source, request_reason, created_by, idempotency_key,
        traceparent, next_wake_at, last_event_seq, created_at, updated_at)
    SELECT md5('d' || :n::text)::uuid, go.id, :cluster_id::uuid,
        'ghcr.io/acme/web:2.0.' || :n::text, '2.0.' || :n::text,
        '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}',
        jsonb_build_object('release', jsonb_build_object('image',
                'ghcr.io/acme/web:2.0.' || :n::text, 'version', '2.0.' || :n::text),
            'approval', '{"required": false, "distinct_approver": false}'::jsonb,
            'strategy', '{"type": "rolling", "max_surge": "25%", "max_unavailable": 0}'::jsonb,
            'workload', '{"name": "bench", "port": 8080, "replicas": 4, "container": "bench"}'::jsonb,
            'namespace', 'bench', 'progress_deadline', '10m'),
        'queued', 'api', '{"kind": "api"}', 'bench', 'anonymous', 'k' || :n::text, NULL, now(),
        1, now(), now()
    FROM go
    RETURNING id
),
ev AS (
    INSERT INTO deployment_events (deployment_id, seq, at, kind, actor, message, data)
    SELECT id, 1, now(), 'queued', 'anonymous',
        'rolling strategy deployment of ghcr.io/acme/web:2.0.' || :n::text || ' (2.0.'
            || :n::text || ') to bench/load queued',
        jsonb_build_object('image', 'ghcr.io/acme/web:2.0.' || :n::text,
            'version', '2.0.' || :n::text, 'strategy', 'rolling', 'source', 'api')
    FROM dep
    RETURNING deployment_id
),
woken AS (
    SELECT pg_notify('slipway_wake', deployment_id::text),
           pg_notify('slipway_events', deployment_id::text || ':1')
    FROM ev WHERE false
)
SELECT EXISTS (SELECT FROM env), coalesce((SELECT current FROM env), false),
       EXISTS (SELECT FROM ev) AND (SELECT count(*) FROM woken) >= 0;
