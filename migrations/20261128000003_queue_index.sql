-- The ends of an environment's queue (oldest and newest queued deployment) by index, without
-- reading every queued row.
CREATE INDEX deployments_queued_idx ON deployments (environment_id, id) WHERE status = 'queued';
