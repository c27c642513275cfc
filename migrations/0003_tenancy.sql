-- Tenancy: tokens that expire and record their last use, namespace roles
-- bound to the namespace's identity (its uid), so a namespace deleted and
-- created again under the same name does not revive its old tokens; and
-- the cluster's own secrets (the key nodes authenticate their proxied
-- requests to one another with).

ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ADD COLUMN last_used_at timestamptz;

-- NULL only for roles granted before this migration, which stay bound to
-- the name alone.
ALTER TABLE token_roles ADD COLUMN namespace_uid uuid;

CREATE TABLE cluster_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
