-- Scratch tables for the pgbench baseline of bench/run-engine.sh, in the database the engine
-- run used: copies of deployments, deployment_events and deployment_journal with the same
-- columns, defaults, checks and indexes (LIKE ... INCLUDING ALL) and the same foreign keys,
-- filled with one real deployment per environment (so the one-active index holds) and one
-- journal row each. `k` numbers the rows so that each pgbench client owns its own rows, as
-- each engine worker owns the deployment it leased.
DROP TABLE IF EXISTS engine_bench_journal, engine_bench_events, engine_bench_deployments;
CREATE TABLE engine_bench_deployments (LIKE deployments INCLUDING ALL);
-- LIKE does not copy storage parameters: the same fillfactor as deployments (see its
-- migration), so that the baseline's updates stay on their page as the engine's do.
DO $$
DECLARE ff text := (SELECT option_value FROM pg_options_to_table(
    (SELECT reloptions FROM pg_class WHERE oid = 'deployments'::regclass))
    WHERE option_name = 'fillfactor');
BEGIN
    IF ff IS NOT NULL THEN
        EXECUTE format('ALTER TABLE engine_bench_deployments SET (fillfactor = %s)', ff);
    END IF;
END $$;
ALTER TABLE engine_bench_deployments ADD COLUMN k integer;
CREATE TABLE engine_bench_events (LIKE deployment_events INCLUDING ALL);
ALTER TABLE engine_bench_events ADD FOREIGN KEY (deployment_id)
    REFERENCES engine_bench_deployments (id) ON DELETE CASCADE;
CREATE TABLE engine_bench_journal (LIKE deployment_journal INCLUDING ALL);
ALTER TABLE engine_bench_journal ADD FOREIGN KEY (deployment_id)
    REFERENCES engine_bench_deployments (id) ON DELETE CASCADE;

INSERT INTO engine_bench_deployments
SELECT DISTINCT ON (environment_id) *, 0
FROM deployments ORDER BY environment_id, id DESC;
UPDATE engine_bench_deployments b SET k = n.k - 1, epoch = 1, status = 'running',
       outcome = NULL, lease_owner = NULL, lease_expires_at = NULL, next_wake_at = NULL
FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM engine_bench_deployments) n
WHERE n.id = b.id;
CREATE UNIQUE INDEX ON engine_bench_deployments (k);
INSERT INTO engine_bench_journal (deployment_id, tick, epoch, worker, observation)
SELECT id, 0, 1, 'pgbench', '{}'::jsonb FROM engine_bench_deployments;
VACUUM ANALYZE engine_bench_deployments, engine_bench_events, engine_bench_journal;
SELECT count(*) AS rows FROM engine_bench_deployments;
