-- The objects an owner controls, found by the owner's uid: the Deployment
-- controller reads a Deployment's pods this way on every reconcile, and a
-- namespace may hold thousands of other pods.
CREATE INDEX objects_owners ON objects
    USING gin ((body #> '{metadata,ownerReferences}') jsonb_path_ops);
