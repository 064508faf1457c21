-- The engine: what a deployment rolls (frozen when it is created), its attempts, the
-- per-step journal, and wake-up hints.

-- The RolloutSpec (namespace, workload, strategy, policy, release) frozen at creation, so a
-- later change to the environment does not change a deployment that was already accepted.
ALTER TABLE deployments ADD COLUMN rollout jsonb;
ALTER TABLE deployments ADD COLUMN cluster_id uuid
    CONSTRAINT deployments_cluster_fkey REFERENCES clusters (id) ON DELETE RESTRICT;
ALTER TABLE deployments ADD COLUMN attempt integer NOT NULL DEFAULT 1;
-- Why a running deployment is waiting (e.g. cluster_unreachable); cleared when it moves on.
ALTER TABLE deployments ADD COLUMN waiting_reason text;
-- Number of decisions persisted; a journal step is identified by it.
ALTER TABLE deployments ADD COLUMN tick bigint NOT NULL DEFAULT 0;

-- Deployments recorded before this migration get the spec their environment has now.
UPDATE deployments d SET
    cluster_id = e.cluster_id,
    rollout = jsonb_build_object(
        'namespace', e.spec->'namespace',
        'workload', e.spec->'workload',
        'strategy', d.strategy,
        'progress_deadline', coalesce(e.spec->'progress_deadline', '"10m"'::jsonb),
        'approval', coalesce(e.spec->'approval', '{"required": false, "distinct_approver": false}'::jsonb),
        'release', jsonb_build_object('image', d.image, 'version', d.version))
FROM environments e WHERE e.id = d.environment_id AND d.rollout IS NULL;
ALTER TABLE deployments ALTER COLUMN rollout SET NOT NULL;
ALTER TABLE deployments ALTER COLUMN cluster_id SET NOT NULL;

-- Claims look for due rows that are not leased (or whose lease expired).
DROP INDEX deployments_due_idx;
CREATE INDEX deployments_due_idx ON deployments (next_wake_at) WHERE next_wake_at IS NOT NULL;

-- One row per engine step: started, then done, with the observation that decided it.
CREATE TABLE deployment_journal (
    deployment_id uuid        NOT NULL,
    tick          bigint      NOT NULL,
    epoch         bigint      NOT NULL,
    worker        text        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    observation   jsonb,
    actions       jsonb,
    status_after  deployment_status,
    CONSTRAINT deployment_journal_pkey PRIMARY KEY (deployment_id, tick, epoch),
    CONSTRAINT deployment_journal_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE
);

ALTER TABLE commands ADD COLUMN outcome text;

-- A position across all deployments' events, for the global event feed (`GET /v1/events`).
ALTER TABLE deployment_events ADD COLUMN position bigserial;
CREATE UNIQUE INDEX deployment_events_position_key ON deployment_events (position);
