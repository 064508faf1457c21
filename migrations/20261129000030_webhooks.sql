-- CI webhooks: triggers (with their sealed secrets), the deliveries that created deployments
-- (de-duplication), and the outbox of GitHub deployment statuses.

CREATE TABLE triggers (
    id            uuid        NOT NULL,
    app_id        uuid        NOT NULL,
    source        text        NOT NULL,
    -- The validated TriggerSpec (source, event, repository, ref pattern, image, environment).
    spec          jsonb       NOT NULL,
    -- The webhook secret sealed with XChaCha20-Poly1305 under the configured secrets key,
    -- bound to the trigger's id: version byte, 24-byte nonce, ciphertext and tag.
    secret_sealed bytea       NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT triggers_pkey PRIMARY KEY (id),
    CONSTRAINT triggers_app_fkey FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE,
    CONSTRAINT triggers_source_check CHECK (source IN ('github', 'gitlab', 'generic'))
);
CREATE INDEX triggers_app_id_idx ON triggers (app_id, id);
CREATE INDEX triggers_app_source_idx ON triggers (app_id, source);

-- A delivery that created deployments, by the id its sender gave it; inserted in the same
-- transaction as the deployments, so a redelivery (or a concurrent copy) creates nothing.
CREATE TABLE webhook_deliveries (
    app_id      uuid        NOT NULL,
    source      text        NOT NULL,
    delivery_id text        NOT NULL,
    event       text        NOT NULL,
    -- The 202 body the delivery was answered with, replayed to a redelivery.
    response    jsonb,
    metadata    jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (app_id, source, delivery_id),
    CONSTRAINT webhook_deliveries_app_fkey FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_received_at_idx ON webhook_deliveries (received_at);

-- A deployment that a GitHub `deployment` event created: where its statuses go.
CREATE TABLE github_deployments (
    deployment_id        uuid   NOT NULL,
    repository           text   NOT NULL,
    github_deployment_id bigint NOT NULL,
    github_environment   text   NOT NULL,
    CONSTRAINT github_deployments_pkey PRIMARY KEY (deployment_id),
    CONSTRAINT github_deployments_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE
);

-- Events of GitHub-linked deployments not yet looked at by the status relay. Filled by a
-- trigger in the transaction that appends the event, so none is missed and, per deployment,
-- they are in `seq` order (appends to one deployment serialize on its row).
CREATE TABLE github_status_queue (
    id            bigserial NOT NULL,
    deployment_id uuid      NOT NULL,
    seq           bigint    NOT NULL,
    CONSTRAINT github_status_queue_pkey PRIMARY KEY (id),
    CONSTRAINT github_status_queue_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE
);

CREATE FUNCTION github_status_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO github_status_queue (deployment_id, seq)
    SELECT NEW.deployment_id, NEW.seq
    WHERE EXISTS (SELECT 1 FROM github_deployments g WHERE g.deployment_id = NEW.deployment_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_events_github_status
    AFTER INSERT ON deployment_events
    FOR EACH ROW EXECUTE FUNCTION github_status_enqueue();

-- Statuses to post, in order per deployment (by id), with retries.
CREATE TABLE github_status_outbox (
    id              bigserial   NOT NULL,
    deployment_id   uuid        NOT NULL,
    state           text        NOT NULL,
    description     text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    abandoned_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT github_status_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT github_status_outbox_deployment_fkey FOREIGN KEY (deployment_id)
        REFERENCES deployments (id) ON DELETE CASCADE,
    CONSTRAINT github_status_outbox_state_check
        CHECK (state IN ('in_progress', 'success', 'failure', 'error', 'inactive', 'queued'))
);
CREATE INDEX github_status_outbox_pending_idx ON github_status_outbox (deployment_id, id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
