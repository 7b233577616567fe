-- References checked once per statement instead of once per row.
--
-- A foreign key is checked by a trigger that runs, for every inserted row,
-- a query of its own (with an executor started and stopped around it) and
-- locks the parent row against deletion. Our writes insert rows in batches
-- (an intake batch writes about 32 requests, 160 instructions and their
-- events in three statements), so those per-row checks were 27 % of
-- PostgreSQL's CPU in a profile of the intake benchmark and 16 % in one of
-- the fanout benchmark, and intake's single writer waits for all of them.
--
-- The same guarantee, cheaper:
--
-- * every child table checks, once per inserting statement, that each new
--   row's parent exists, with one anti-join of the statement's new rows
--   (a transition table) against the parent's primary key;
-- * no parent row can disappear afterwards: the orchestrator never deletes
--   requests, processors or instructions (a processor is disabled, a
--   request closed), and the database now refuses to, as it refuses to
--   change a referencing or referenced key.
--
-- Together these keep every reference valid, as the foreign keys did; the
-- row locks the foreign keys took existed only to stop a concurrent
-- delete, which cannot happen. A later migration that lets a parent be
-- deleted (purging history, say) must delete its children with it.

alter table instructions drop constraint instructions_request_id_fkey;
alter table instructions drop constraint instructions_processor_id_fkey;
alter table delivery_attempts drop constraint delivery_attempts_instruction_id_fkey;
alter table request_events drop constraint request_events_request_id_fkey;
alter table completion_records drop constraint completion_records_request_id_fkey;

-- The checks. Each must probe the parent's primary key once per new row,
-- whatever the tables' sizes: left to itself the planner hashed the whole
-- parent table for a batch (a sequential scan of every request ever taken
-- in: 7 ms at 20,000), and PL/pgSQL keeps a statement's first plan for the
-- session, made while the tables may have been empty (a scan of the
-- parent for every new row once it has grown). So everything but index
-- probes is off inside them. One function per parent table, shared by
-- every child that names the parent by the same column.
create function request_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n where not exists (select 1 from requests r where r.id = n.request_id)) then
        raise foreign_key_violation using message = format('a row of %s refers to a request that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;

create function processor_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n where not exists (select 1 from processors p where p.id = n.processor_id)) then
        raise foreign_key_violation using message = format('a row of %s refers to a processor that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;

create function instruction_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n where not exists (select 1 from instructions i where i.id = n.instruction_id)) then
        raise foreign_key_violation using message = format('a row of %s refers to an instruction that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;

create trigger instructions_request_exists after insert on instructions
    referencing new table as new_rows
    for each statement execute function request_references_exist();
create trigger instructions_processor_exists after insert on instructions
    referencing new table as new_rows
    for each statement execute function processor_references_exist();
create trigger delivery_attempts_instruction_exists after insert on delivery_attempts
    referencing new table as new_rows
    for each statement execute function instruction_references_exist();
create trigger request_events_request_exists after insert on request_events
    referencing new table as new_rows
    for each statement execute function request_references_exist();
create trigger completion_records_request_exists after insert on completion_records
    referencing new table as new_rows
    for each statement execute function request_references_exist();

-- Rows others refer to are never deleted, and no key that refers or is
-- referred to is ever changed. Statement triggers: an UPDATE fires one
-- `of` a column only when its SET list names that column (none of ours
-- does), and at no per-row cost (a row trigger, even one that never fires,
-- makes PostgreSQL fetch every updated row again for it).
create function refuse_reference_change() returns trigger language plpgsql as $$
begin
    raise restrict_violation using message = format('%s: rows are never deleted and their keys never change (%s)', tg_table_name, tg_op);
end;
$$;

create trigger requests_kept before delete or truncate or update of id on requests
    for each statement execute function refuse_reference_change();
create trigger processors_kept before delete or truncate or update of id on processors
    for each statement execute function refuse_reference_change();
create trigger instructions_kept before delete or truncate or update of id, request_id, processor_id on instructions
    for each statement execute function refuse_reference_change();
create trigger delivery_attempts_key_kept before update of instruction_id on delivery_attempts
    for each statement execute function refuse_reference_change();
create trigger request_events_key_kept before update of request_id on request_events
    for each statement execute function refuse_reference_change();
