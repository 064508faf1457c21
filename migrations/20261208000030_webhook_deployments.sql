-- What a webhook delivery said about each deployment it created: the trigger that matched,
-- the human the delivery names as its actor (GitHub `sender.login`, GitLab `user_username`
-- or `user.username`, a generic delivery's `metadata.user`) and the commit with its time.
-- The actor is the requester the distinct-approver rule compares the approver with (the
-- deployment's `created_by` is the webhook principal, `webhook:<source>/<trigger>`); the
-- commit time lets a trigger refuse a delivery older than what it already serves.
CREATE TABLE webhook_deployments (
    deployment_id uuid        NOT NULL,
    trigger_id    uuid        NOT NULL,
    actor         text,
    commit_sha    text,
    committed_at  timestamptz,
    CONSTRAINT webhook_deployments_pkey PRIMARY KEY (deployment_id),
    CONSTRAINT webhook_deployments_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE
);
-- The newest deployments of a trigger first.
CREATE INDEX webhook_deployments_trigger_idx ON webhook_deployments (trigger_id, deployment_id DESC);

-- Deployments webhooks made before this table: their trigger and actor are known (the
-- principal names the trigger, the source the user); their commit time is not.
INSERT INTO webhook_deployments (deployment_id, trigger_id, actor, commit_sha)
SELECT d.id, substring(d.created_by FROM '/(.*)$')::uuid, d.source ->> 'user', d.source ->> 'commit'
FROM deployments d
WHERE d.created_by ~ '^webhook:[a-z]+/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
