-- Observability support.

-- The W3C trace context (`traceparent`) of the call that submitted the
-- request, copied to each instruction, so that a delivery made hours later
-- (by any replica) joins the submitting trace and links back to it.
alter table instructions add column trace_context text;

-- The open-requests gauges (count and age by status) read only open rows.
create index requests_open on requests (status, received_at) where status in ('RECEIVED', 'IN_PROGRESS');
