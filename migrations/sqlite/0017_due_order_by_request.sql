-- A claim reads each processor's due first deliveries and retries in due
-- order and, among equal due times, in request order, the same order for
-- every processor, so that the processors of a pass lease the same
-- requests (see `store::claims`). The index carries that order: without
-- the request it was sorted for every claim.
drop index instructions_due_pending;
create index instructions_due_pending on instructions (processor_id, next_attempt_at, request_id)
    where state = 'PENDING';
