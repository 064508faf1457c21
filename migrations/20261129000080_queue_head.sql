-- The deployment that goes next in an environment's queue: the newest queued one when the
-- environment supersedes queued deployments (starting it supersedes the others), else the
-- oldest. A deployment that ends wakes only this one: waking the whole queue made every end
-- cost one claim per queued deployment, and a long queue's cost grow with its square.
CREATE FUNCTION queue_head(environment uuid) RETURNS uuid
    LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN coalesce((SELECT (e.spec->>'supersede_queued')::boolean
                       FROM environments e WHERE e.id = environment), false)
        THEN (SELECT d.id FROM deployments d
              WHERE d.environment_id = environment AND d.status = 'queued'
              ORDER BY d.id DESC LIMIT 1)
        ELSE (SELECT d.id FROM deployments d
              WHERE d.environment_id = environment AND d.status = 'queued'
              ORDER BY d.id LIMIT 1)
    END
$$;
