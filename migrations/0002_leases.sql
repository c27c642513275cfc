-- Node leases: renewed every couple of seconds by each node, so kept out of
-- the objects and the change log (a renewal is one small row update, not a
-- new revision of the Node).
CREATE TABLE leases (
    node text PRIMARY KEY,
    renewed_at timestamptz NOT NULL,
    duration_ms integer NOT NULL CHECK (duration_ms > 0)
);
