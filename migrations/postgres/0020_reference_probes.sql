-- The reference checks (0006) probe the parent's primary key once per new
-- row, whatever the planner believes of the tables' sizes.
--
-- Written as an anti-join (`not exists`), each check was planned as a
-- join, and PL/pgSQL keeps the plan a session first made. A connection
-- whose first check ran while the parent table looked small (a new
-- deployment, or one whose statistics were never taken) kept a plan that
-- read the whole parent through one of its indexes and matched every new
-- row against all of it: a cost that grew with every request ever taken
-- in, paid by each intake batch on that connection, and which held intake
-- to about half its rate in the runs where the pool's connections had
-- planned so. A scalar subquery cannot be turned into a join: it runs once
-- per new row, as one probe of the parent's primary key.
create or replace function request_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n
               where (select r.id from requests r where r.id = n.request_id) is null) then
        raise foreign_key_violation using message = format('a row of %s refers to a request that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;

create or replace function processor_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n
               where (select p.id from processors p where p.id = n.processor_id) is null) then
        raise foreign_key_violation using message = format('a row of %s refers to a processor that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;

create or replace function instruction_references_exist() returns trigger language plpgsql
    set enable_hashjoin = off set enable_mergejoin = off set enable_seqscan = off as $$
begin
    if exists (select 1 from new_rows n
               where (select i.id from instructions i where i.id = n.instruction_id) is null) then
        raise foreign_key_violation using message = format('a row of %s refers to an instruction that does not exist', tg_table_name);
    end if;
    return null;
end;
$$;
