-- The GIN indexes of `objects` take new entries into the index itself,
-- not into a pending list. A GIN index's pending list (on by default,
-- up to 4 MB) is read whole by every search until vacuum merges it, and
-- every write of an object adds to it (an update moves the body, so each
-- index gets new entries). Measured with 1,000 functions just created
-- and analyzed: the activation's read of a Service, its Deployments and
-- their pods took 3.1 ms with the lists full and 0.2 ms without them.
-- What a Pod create pays instead is measured by `bench/api 1.0 gin-pending`.
ALTER INDEX objects_labels SET (fastupdate = off);
ALTER INDEX objects_owners SET (fastupdate = off);
ALTER INDEX objects_template_labels SET (fastupdate = off);
-- Entries already pending are merged now, not at the next vacuum.
SELECT gin_clean_pending_list('objects_labels');
SELECT gin_clean_pending_list('objects_owners');
SELECT gin_clean_pending_list('objects_template_labels');
