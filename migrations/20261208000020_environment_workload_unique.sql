-- One workload (cluster, namespace, Deployment name) belongs to one environment. Without it
-- an admin of one app (or of one environment) could aim an environment at another app's
-- workload, or at their own prod, and deploy there past prod's approval.
--
-- Environments that already share a workload are not resolved here: which of them owns it is
-- a decision for a person (the older one may be the intruder). The migration stops, naming
-- them, and the operator points all but one elsewhere (PUT the environment with another
-- namespace or workload name on the running older Slipway) before upgrading
-- (docs/decisions/020-workload-ownership.md).
DO $$
DECLARE
    clash text;
BEGIN
    SELECT string_agg(format('cluster %s, namespace %s, workload %s: %s', c.name, d.namespace,
                             d.workload, d.environments), '; ')
    INTO clash
    FROM (SELECT e.cluster_id, e.spec->>'namespace' AS namespace,
                 e.spec #>> '{workload,name}' AS workload,
                 string_agg(a.name || '/' || e.name, ', ' ORDER BY a.name, e.name) AS environments
          FROM environments e JOIN apps a ON a.id = e.app_id
          GROUP BY 1, 2, 3 HAVING count(*) > 1) d
    JOIN clusters c ON c.id = d.cluster_id;
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'environments share a workload; point all but one of each elsewhere before upgrading: %', clash
            USING ERRCODE = 'unique_violation';
    END IF;
END
$$;

CREATE UNIQUE INDEX environments_workload_key
    ON environments (cluster_id, (spec->>'namespace'), (spec #>> '{workload,name}'));
