-- A token that may read the control plane's metrics and nothing else:
-- granted only at the cluster level, by a cluster admin.
ALTER TABLE tokens ADD COLUMN metrics boolean NOT NULL DEFAULT false;
