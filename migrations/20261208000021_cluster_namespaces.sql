-- Which namespaces each app may use on a cluster, set by bootstrap admins
-- (`PUT /v1/clusters/{cluster}/namespaces`): an object of app name -> namespace names.
-- NULL: the cluster is not restricted (clusters registered before this, until a list is set);
-- once set, an app it does not name may use no namespace there.
ALTER TABLE clusters ADD COLUMN namespaces jsonb,
    ADD CONSTRAINT clusters_namespaces_is_object
        CHECK (namespaces IS NULL OR jsonb_typeof(namespaces) = 'object');
