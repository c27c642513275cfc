-- What each namespace under a ResourceQuota uses, so admitting a create
-- reads a few rows instead of scanning the namespace. The writer keeps it
-- in the transaction of every write that changes it, under the revision
-- lock; a namespace's rows are filled from its objects when a quota is
-- created there (or when a quota is found without them, as after this
-- migration), and dropped with its last quota or with the namespace.
-- A row, while it exists, is exact.
CREATE TABLE quota_usage (
    namespace text NOT NULL,
    -- A quota's resource name: `pods`, `configmaps`..., `memory`,
    -- `instances`, `cpu`.
    resource text NOT NULL,
    -- numeric, not bigint: pod sums are unbounded (cpu is), and an
    -- overflow would fail every write to the namespace.
    used numeric NOT NULL,
    PRIMARY KEY (namespace, resource)
);
