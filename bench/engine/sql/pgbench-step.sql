-- Diagnostic, not the target's baseline: every statement one engine step sends for an
-- active deployment whose decision has two notes and cluster actions (crates/engine/src/
-- step.rs `advance` + `persist`, crates/store rollouts::claim_due / write_step,
-- leases::holds), in the same order, without the engine: the claim that loads the row, its
-- cluster and environment and its pending commands (one statement); the fence check before
-- acting on the cluster; the write of the state, both events, the journal row, the consumed
-- commands and the release (one statement). Each statement is its own transaction. The
-- events' NOTIFY is not in the write: the engine's Notifier sends the hints of many steps in
-- one statement afterwards (crates/engine/src/notify.rs); pgbench-step-notify-inline.sql
-- prices a NOTIFY inside the write instead.
-- (The statement list before the one-statement step is in pgbench-step-before.sql.)
\set k :client_id + :clients * random(0, :rows - 1)
WITH due AS (
    SELECT id FROM engine_bench_deployments WHERE k = :k
    FOR UPDATE SKIP LOCKED
),
d AS (
    UPDATE engine_bench_deployments d
       SET lease_owner = 'pgbench', lease_expires_at = now() + interval '30 seconds',
           next_wake_at = now() + interval '30 seconds', epoch = d.epoch + 1
      FROM due WHERE d.id = due.id
    RETURNING d.id, d.epoch, d.environment_id, d.status, d.rollout, d.state,
        d.created_by, d.attempt, d.tick, d.cluster_id, d.traceparent, d.created_at
)
SELECT d.id AS did, d.epoch AS epoch, d.environment_id, d.status::text AS status, d.rollout,
    d.state AS loaded_state, d.created_by, d.attempt, d.tick, c.id AS cluster_id,
    c.name AS cluster_name, c.kind::text AS cluster_kind,
    (e.spec->>'supersede_queued')::boolean AS supersede_queued, d.created_at,
    coalesce(array_length(p.cmd_ids, 1), 0) AS pending
FROM d
JOIN environments e ON e.id = d.environment_id
JOIN clusters c ON c.id = d.cluster_id
LEFT JOIN LATERAL (
    SELECT array_agg(m.id ORDER BY m.created_at, m.id) AS cmd_ids,
        array_agg(m.kind::text ORDER BY m.created_at, m.id) AS cmd_kinds,
        array_agg(m.actor ORDER BY m.created_at, m.id) AS cmd_actors,
        array_agg(m.reason ORDER BY m.created_at, m.id) AS cmd_reasons,
        array_agg(m.created_at ORDER BY m.created_at, m.id) AS cmd_created
    FROM commands m WHERE m.deployment_id = d.id AND m.consumed_at IS NULL
) p ON true \gset
SELECT 1 FROM engine_bench_deployments WHERE id = :did AND epoch = :epoch;
WITH d AS (
    UPDATE engine_bench_deployments SET
        status = 'running'::deployment_status, phase = 'canary_step', step = 3,
        outcome = NULL::deployment_outcome, serving_health = 'healthy'::serving_health,
        serving_version = '1.0.0', failure_code = NULL, failure_message = NULL,
        state = :state::jsonb, waiting_reason = NULL, tick = tick + 1, updated_at = now(),
        last_event_seq = last_event_seq + 2,
        lease_owner = NULL, lease_expires_at = NULL,
        next_wake_at = CASE
            WHEN next_wake_at <= now() THEN next_wake_at
            WHEN EXISTS (SELECT FROM commands c WHERE c.deployment_id = :did
                         AND c.consumed_at IS NULL AND NOT (c.id = ANY('{}'::uuid[])))
                THEN 'epoch'::timestamptz
            ELSE now() END
    WHERE id = :did AND epoch = :epoch AND (NOT false OR status = 'queued')
    RETURNING id, environment_id, tick, last_event_seq
),
ev AS (
    INSERT INTO engine_bench_events (deployment_id, seq, kind, actor, message, data)
    SELECT d.id, d.last_event_seq - 2 + e.n, e.kind, e.actor, e.message, e.data
    FROM d, unnest(ARRAY['traffic_shifted', 'step_completed'],
                   ARRAY['slipway', 'slipway'],
                   ARRAY['canary at 30% (3 replicas)', 'step 3 done'],
                   ARRAY[:data::jsonb, :data::jsonb])
        WITH ORDINALITY AS e (kind, actor, message, data, n)
    RETURNING seq
),
cmd AS (
    UPDATE commands c SET consumed_at = now(), outcome = 'applied'
    FROM d WHERE c.id = ANY('{}'::uuid[]) AND c.deployment_id = d.id
    RETURNING c.id
),
j AS (
    INSERT INTO engine_bench_journal (deployment_id, tick, epoch, worker, started_at,
        finished_at, observation, actions, status_after)
    SELECT d.id, d.tick, :epoch, 'pgbench', now(), now(), :observation::jsonb,
        :actions::jsonb, 'running'::deployment_status
    FROM d
    RETURNING tick
),
woke AS (
    UPDATE engine_bench_deployments q SET next_wake_at = now()
    FROM d
    WHERE false AND q.environment_id = d.environment_id AND q.status = 'queued'
      AND q.id <> d.id
    RETURNING q.id
),
note AS (
    SELECT 1
    FROM d
    UNION ALL
    SELECT 1 FROM woke
)
SELECT d.tick, (SELECT count(*) FROM ev) + (SELECT count(*) FROM cmd)
    + (SELECT count(*) FROM j) + (SELECT count(*) FROM note) AS written
FROM d;
