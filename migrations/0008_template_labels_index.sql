-- The Deployments a Service selects, found by their pod template's labels:
-- a function's activation and the endpoints controller look them up this
-- way, and a namespace may hold thousands of Deployments, most at zero
-- (without it the lookup read and matched every one: about 5 ms at 1,000).
-- Not partial: `kind` is a bound parameter, which a generic plan cannot
-- match against an index predicate.
CREATE INDEX objects_template_labels ON objects
    USING gin ((body #> '{spec,template,metadata,labels}') jsonb_path_ops);
