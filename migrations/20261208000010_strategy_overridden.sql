-- Whether a deployment runs a strategy of its request's own (allowed only where the
-- environment sets `allow_strategy_override`) rather than its environment's. Deployments
-- recorded before this column existed ran their environment's strategy or an override
-- nobody could tell apart; they read as not overridden.
ALTER TABLE deployments
    ADD COLUMN strategy_overridden boolean NOT NULL DEFAULT false;
