-- The deployments row is rewritten by every engine step (state, tick, lease). Leaving half of
-- each page free lets most of those updates stay on the row's page as heap-only tuples: no
-- new entry in each of the table's six indexes, and the old version pruned in place. Applies
-- to pages written from now on (a table of an older install is rewritten by VACUUM FULL).
ALTER TABLE deployments SET (fillfactor = 50);
