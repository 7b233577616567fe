-- Every instruction is inserted once and updated twice or more (claimed,
-- then answered), and no update can be HOT because `state` is indexed:
-- each update inserts into every index whose predicate the new row
-- matches. The profile of the fanout benchmark put a quarter of
-- PostgreSQL's time in index maintenance, so:
--
-- * lookups by request use the unique (request_id, processor_id) index;
--   the single-column one only doubled its cost.
drop index instructions_by_request;
-- * the dispatcher's next-due probe now reads the per-processor due
--   indexes, so the global one is unused.
drop index instructions_pending_due;
-- * listing by state serves operators looking at settled or stuck work;
--   the transient PENDING and DELIVERING rows are found through the
--   dispatcher's partial indexes instead of being indexed a second time at
--   every claim.
drop index instructions_by_state;
create index instructions_by_state on instructions (state, id)
    where state in ('ACKNOWLEDGED', 'ESCALATED', 'COMPLETED', 'NO_DATA', 'DENIED', 'FAILED', 'CANCELLED');
-- A request row is bumped at every change of one of its instructions
-- (sequence number, open count), columns no index holds: room on the page
-- lets those updates be HOT (no index entries at all).
alter table requests set (fillfactor = 80);
