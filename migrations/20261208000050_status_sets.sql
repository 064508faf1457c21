-- The sets of deployment statuses, defined once for every statement: `slipway_is_active` and
-- `slipway_is_terminal` are `DeploymentStatus::is_active` and `is_terminal`
-- (crates/core/src/deployment.rs), `slipway_is_live` is "not terminal" spelled as the set it is
-- (queued or active), so that a statement asking for the live ones can use an index on
-- `status`. A store test checks them, the partial index `deployments_one_active_per_environment`
-- and the check `deployments_outcome_only_when_terminal` against the Rust for every status.
--
-- Each is a one-expression SQL function, IMMUTABLE and not STRICT, so PostgreSQL inlines it:
-- `slipway_is_active(status)` is planned as `status = ANY ('{running,paused,rolling_back}')`,
-- the predicate of the partial index, which stays usable (the lists are in the index's order).
CREATE FUNCTION slipway_is_active(status deployment_status) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT status IN ('running', 'paused', 'rolling_back') $$;

CREATE FUNCTION slipway_is_terminal(status deployment_status) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT status IN ('succeeded', 'failed', 'rolled_back', 'cancelled', 'superseded') $$;

CREATE FUNCTION slipway_is_live(status deployment_status) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT status IN ('queued', 'running', 'paused', 'rolling_back') $$;
