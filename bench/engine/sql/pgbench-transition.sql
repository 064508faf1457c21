-- One transition as the issue states it: the deployment row's state/status/tick UPDATE
-- guarded by (id, epoch), an event INSERT, and the journal row's UPDATE, in one transaction.
-- Variables: -D rows=<rows per client> -D state=<a real state jsonb> -D data=<event data>
-- -D actions=<a real actions jsonb>; :client_id is pgbench's (0-based).
\set k :client_id + :clients * random(0, :rows - 1)
BEGIN;
UPDATE engine_bench_deployments SET
    status = 'running', phase = 'canary_step', step = 3, state = :state::jsonb,
    tick = tick + 1, last_event_seq = last_event_seq + 1, updated_at = now()
WHERE k = :k AND epoch = 1
RETURNING id AS did, last_event_seq AS seq \gset
INSERT INTO engine_bench_events (deployment_id, seq, kind, actor, message, data)
VALUES (:did, :seq, 'step_completed', 'slipway', 'step 3 done', :data::jsonb);
UPDATE engine_bench_journal j SET finished_at = now(), actions = :actions::jsonb,
    status_after = 'running'
FROM engine_bench_deployments d
WHERE j.deployment_id = :did AND j.tick = 0 AND j.epoch = 1 AND d.id = :did AND d.epoch = 1;
END;
