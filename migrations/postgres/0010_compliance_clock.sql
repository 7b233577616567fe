-- The compliance clock, the verification gate, the audit trail and purge.
--
-- requests: the deadlines set at intake from the jurisdiction's policy
-- (receipt confirmation, response), the one extension (the original
-- deadline it replaced, why, by whom, when), the receipt confirmation, what
-- an access request asks for, the reference to an agent's evidence, why a
-- request was denied at intake ('UNVERIFIED'), and the hash of its last
-- event (the head of its audit trail). All timestamps integer microseconds.
alter table requests add column confirm_by bigint;
alter table requests add column respond_by bigint;
alter table requests add column extended_from bigint;
alter table requests add column extension_reason text;
alter table requests add column extended_by text;
alter table requests add column extended_at bigint;
alter table requests add column confirmed_at bigint;
alter table requests add column confirmed_by text;
alter table requests add column access_scope text check (access_scope in ('CATEGORIES', 'SPECIFIC_PIECES'));
alter table requests add column requester_evidence text;
alter table requests add column denied text check (denied in ('UNVERIFIED'));
alter table requests add column audit_head text;

-- Requests taken in before deadlines existed get the default period of
-- their jurisdiction in calendar days (a month counted as 30), ending at
-- the end of that day, UTC.
update requests set respond_by = (submitted_at / 86400000000 + 1 + case jurisdiction
    when 'CCPA' then 45 when 'GDPR' then 30 when 'APPI' then 14 else 30 end) * 86400000000 - 1;
alter table requests alter column respond_by set not null;

-- Open requests by deadline: ListRequests' "overdue", "due before" and
-- deadline order, and the time-left gauges.
create index requests_open_by_deadline on requests (respond_by, id)
    where status in ('RECEIVED', 'IN_PROGRESS');

-- instructions: when the processor's answer is due (the request's
-- deadline less the processor's safety margin) and when an instruction
-- still open escalates (halfway from there to the request's deadline).
alter table instructions add column due_at bigint;
alter table instructions add column escalate_at bigint;
update instructions i set due_at = greatest(r.respond_by - 7 * 86400000000, i.created_at)
    from requests r where r.id = i.request_id;
update instructions set escalate_at = due_at + (r.respond_by - due_at) / 2
    from requests r where r.id = instructions.request_id
    and instructions.state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED');
alter table instructions alter column due_at set not null;

-- The sweep that escalates open instructions at their time reads this.
create index instructions_escalate on instructions (escalate_at)
    where state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED');

-- request_events: the hash chain. Each event stores the hash of the one
-- before it and its own; rows written before this migration are chained
-- by the server at its next start.
alter table request_events add column prev_hash text;
alter table request_events add column hash text;

-- Purge is the one deletion: the server's purge transaction sets
-- dsr.purge for itself (`set local`), and only then may closed requests'
-- rows go. Everything else stays refused, truncation always.
create or replace function refuse_reference_change() returns trigger language plpgsql as $$
begin
    if tg_op = 'DELETE' and current_setting('dsr.purge', true) = 'on'
        and tg_table_name in ('requests', 'instructions', 'request_events', 'completion_records') then
        return null;
    end if;
    raise restrict_violation using message = format('%s: rows are never deleted but by the retention purge, and their keys never change (%s)', tg_table_name, tg_op);
end;
$$;
create trigger request_events_kept before delete or truncate on request_events
    for each statement execute function refuse_reference_change();
create trigger completion_records_kept before delete or truncate on completion_records
    for each statement execute function refuse_reference_change();
