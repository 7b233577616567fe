-- The escalation sweep's index holds only rows with an escalation time (see
-- the PostgreSQL migration of the same name).
drop index instructions_escalate;
create index instructions_escalate on instructions (escalate_at)
    where escalate_at is not null and state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED');
