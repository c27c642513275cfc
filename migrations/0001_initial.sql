-- The cluster's state: objects, the change log watches are served from,
-- and API tokens. Revisions are assigned by locking the single `revision`
-- row for the whole of a write transaction, so they follow commit order:
-- a reader that sees revision N has every change up to N.

CREATE TABLE revision (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    value bigint NOT NULL
);
INSERT INTO revision (value) VALUES (0);

CREATE TABLE objects (
    kind text NOT NULL,
    -- Empty for cluster-scoped kinds (Namespace, Node).
    namespace text NOT NULL,
    name text NOT NULL,
    uid uuid NOT NULL UNIQUE,
    resource_version bigint NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    body jsonb NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE INDEX objects_labels ON objects USING gin (labels);
CREATE INDEX objects_pod_node ON objects ((body #>> '{spec,nodeName}')) WHERE kind = 'Pod';

CREATE TABLE changes (
    revision bigint PRIMARY KEY,
    kind text NOT NULL,
    namespace text NOT NULL,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    -- The object after the change (for DELETED, as it was when deleted).
    object jsonb NOT NULL,
    -- The object before a MODIFIED, so a filtered watch can tell an object
    -- entering or leaving its selector.
    previous jsonb
);

-- Changes at or below this revision may have been deleted from `changes`.
CREATE TABLE compaction (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision bigint NOT NULL
);
INSERT INTO compaction (revision) VALUES (0);

CREATE TABLE tokens (
    id uuid PRIMARY KEY,
    -- sha256 of the whole token; the token itself is never stored.
    secret_hash bytea NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    cluster_admin boolean NOT NULL DEFAULT false,
    -- Set for a node's token: it may act only for this node.
    node_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE token_roles (
    token_id uuid NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    namespace text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'edit', 'view')),
    PRIMARY KEY (token_id, namespace)
);

CREATE TABLE cluster (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    initialized_at timestamptz NOT NULL DEFAULT now()
);
