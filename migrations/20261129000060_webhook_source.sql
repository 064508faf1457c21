-- Deployments requested by a signed delivery to POST /v1/webhooks/generic are attributed to
-- their own source kind (they were recorded as 'api').
ALTER TYPE source_kind ADD VALUE IF NOT EXISTS 'webhook';
