-- GitHub signs a delivery's body, not its `X-GitHub-Delivery` id: a captured delivery resent
-- under a new id must still be the same delivery. Such deliveries also record the SHA-256 of
-- their event and body, unique per app and source for as long as the row is kept (the
-- delivery retention window). NULL for sources whose delivery id is signed.
ALTER TABLE webhook_deliveries ADD COLUMN content_digest bytea;
CREATE UNIQUE INDEX webhook_deliveries_content_digest_key
    ON webhook_deliveries (app_id, source, content_digest)
    WHERE content_digest IS NOT NULL;
