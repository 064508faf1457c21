-- Before (not run by the script; kept for comparison). pgbench-step-before.sql without its two pg_notify calls, to price NOTIFY (a
-- transaction that sent one takes a cluster-wide lock while it commits, so such commits
-- serialize). Otherwise the same statements, order and transaction shape as pgbench-step.sql.
\set k :client_id + :clients * random(0, :rows - 1)
WITH due AS (
    SELECT id FROM engine_bench_deployments WHERE k = :k
    FOR UPDATE SKIP LOCKED
)
UPDATE engine_bench_deployments d
   SET lease_owner = 'pgbench', lease_expires_at = now() + interval '30 seconds',
       epoch = d.epoch + 1
  FROM due WHERE d.id = due.id
RETURNING d.id AS did, d.epoch AS epoch, d.tick AS tick \gset
SELECT d.id, d.environment_id, d.status::text AS status, d.rollout, d.state,
       d.created_by, d.attempt, d.tick, c.id AS cluster_id, c.name AS cluster_name,
       c.kind::text AS cluster_kind, c.kubeconfig_path, c.context,
       (e.spec->>'supersede_queued')::boolean AS supersede_queued, d.traceparent, d.created_at
  FROM engine_bench_deployments d
  JOIN environments e ON e.id = d.environment_id
  JOIN clusters c ON c.id = d.cluster_id
 WHERE d.id = :did AND d.epoch = :epoch;
SELECT id, kind::text AS kind, actor, reason, created_at FROM commands
 WHERE deployment_id = :did AND consumed_at IS NULL ORDER BY created_at, id;
INSERT INTO engine_bench_journal (deployment_id, tick, epoch, worker, observation)
SELECT :did, :tick::bigint + 1, :epoch, 'pgbench', :observation::jsonb
  FROM engine_bench_deployments WHERE id = :did AND epoch = :epoch;
BEGIN;
UPDATE engine_bench_deployments SET
    status = 'running'::deployment_status, phase = 'canary_step', step = 3,
    outcome = NULL::deployment_outcome, serving_health = 'healthy'::serving_health,
    serving_version = '1.0.0', failure_code = NULL, failure_message = NULL,
    state = :state::jsonb, waiting_reason = NULL, tick = tick + 1, updated_at = now()
WHERE id = :did AND epoch = :epoch
RETURNING tick AS newtick \gset
UPDATE engine_bench_deployments SET last_event_seq = last_event_seq + 1, updated_at = now()
WHERE id = :did RETURNING last_event_seq AS seq1 \gset
INSERT INTO engine_bench_events (deployment_id, seq, kind, actor, message, data)
VALUES (:did, :seq1, 'traffic_shifted', 'slipway', 'canary at 30% (3 replicas)', :data::jsonb);
UPDATE engine_bench_deployments SET last_event_seq = last_event_seq + 1, updated_at = now()
WHERE id = :did RETURNING last_event_seq AS seq2 \gset
INSERT INTO engine_bench_events (deployment_id, seq, kind, actor, message, data)
VALUES (:did, :seq2, 'step_completed', 'slipway', 'step 3 done', :data::jsonb);
UPDATE engine_bench_journal j SET finished_at = now(), actions = :actions::jsonb,
    status_after = 'running'::deployment_status
  FROM engine_bench_deployments d
 WHERE j.deployment_id = :did AND j.tick = :newtick AND j.epoch = :epoch
   AND d.id = :did AND d.epoch = :epoch;
UPDATE engine_bench_deployments SET lease_owner = NULL, lease_expires_at = NULL,
    next_wake_at = now()
WHERE id = :did AND epoch = :epoch;
END;
