-- The compliance clock, the verification gate, the audit trail and purge
-- (see the PostgreSQL migration of the same name for each column).
alter table requests add column confirm_by integer;
alter table requests add column respond_by integer;
alter table requests add column extended_from integer;
alter table requests add column extension_reason text;
alter table requests add column extended_by text;
alter table requests add column extended_at integer;
alter table requests add column confirmed_at integer;
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

create index requests_open_by_deadline on requests (respond_by, id)
    where status in ('RECEIVED', 'IN_PROGRESS');

alter table instructions add column due_at integer;
alter table instructions add column escalate_at integer;
update instructions set due_at = max((select respond_by from requests r where r.id = instructions.request_id) - 7 * 86400000000, created_at);
update instructions set escalate_at = due_at + ((select respond_by from requests r where r.id = instructions.request_id) - due_at) / 2
    where state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED');

create index instructions_escalate on instructions (escalate_at)
    where state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED');

alter table request_events add column prev_hash text;
alter table request_events add column hash text;

-- Purge is the one deletion: its transaction opens this gate and closes it
-- again before committing, so no other writer ever finds it open (SQLite
-- has one writer at a time).
create table purge_gate (
    id      integer primary key check (id = 1),
    open    integer not null check (open in (0, 1))
);
insert into purge_gate (id, open) values (1, 0);

create trigger requests_kept before delete on requests
    when (select open from purge_gate where id = 1) = 0
begin
    select raise(abort, 'requests: rows are never deleted but by the retention purge');
end;
create trigger instructions_kept before delete on instructions
    when (select open from purge_gate where id = 1) = 0
begin
    select raise(abort, 'instructions: rows are never deleted but by the retention purge');
end;
create trigger request_events_kept before delete on request_events
    when (select open from purge_gate where id = 1) = 0
begin
    select raise(abort, 'request_events: rows are never deleted but by the retention purge');
end;
create trigger completion_records_kept before delete on completion_records
    when (select open from purge_gate where id = 1) = 0
begin
    select raise(abort, 'completion_records: rows are never deleted but by the retention purge');
end;
