-- Tenancy: tokens that expire and record their last use, namespace roles
-- bound to the namespace's identity (its uid), so a namespace deleted and
-- created again under the same name does not revive its old tokens; and
-- the cluster's own secrets (the key nodes authenticate their proxied
-- requests to one another with).

ALTER TABLE tokens ADD COLUMN expires_at timestamptz;
ALTER TABLE tokens ADD COLUMN last_used_at timestamptz;

-- A role counts only while its namespace is the one it was granted in.
-- Roles of namespaces that are gone go now; the others are bound to the
-- namespace as it is.
ALTER TABLE token_roles ADD COLUMN namespace_uid uuid;
UPDATE token_roles r SET namespace_uid = o.uid FROM objects o
    WHERE o.kind = 'Namespace' AND o.namespace = '' AND o.name = r.namespace;
DELETE FROM token_roles WHERE namespace_uid IS NULL;
ALTER TABLE token_roles ALTER COLUMN namespace_uid SET NOT NULL;

CREATE TABLE cluster_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
