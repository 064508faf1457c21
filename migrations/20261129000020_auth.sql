-- Auth: role bindings (who holds which role in an app, optionally in one environment) and
-- the audit trail of every mutating request.

CREATE TABLE role_bindings (
    id          uuid        NOT NULL,
    app_id      uuid        NOT NULL,
    -- NULL: every environment of the app.
    environment text,
    -- Exactly one of subject (a token's `sub`) and group_name (one of its `groups`).
    subject     text,
    group_name  text,
    role        text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT role_bindings_pkey PRIMARY KEY (id),
    CONSTRAINT role_bindings_app_fkey FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE,
    CONSTRAINT role_bindings_one_principal CHECK ((subject IS NULL) <> (group_name IS NULL)),
    CONSTRAINT role_bindings_role_known CHECK (role IN ('viewer', 'deployer', 'approver', 'admin')),
    CONSTRAINT role_bindings_unique UNIQUE NULLS NOT DISTINCT (app_id, environment, subject, group_name)
);
CREATE INDEX role_bindings_subject_idx ON role_bindings (subject, app_id) WHERE subject IS NOT NULL;
CREATE INDEX role_bindings_group_idx ON role_bindings (group_name, app_id) WHERE group_name IS NOT NULL;

-- One row per mutating API request that passed authentication, whatever its answer.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    at          timestamptz NOT NULL DEFAULT now(),
    subject     text        NOT NULL,
    method      text        NOT NULL,
    path        text        NOT NULL,
    status      smallint    NOT NULL,
    request_id  text,
    CONSTRAINT audit_log_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject, id DESC);
