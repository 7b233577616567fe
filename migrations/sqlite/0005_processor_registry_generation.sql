-- A generation number for the processor registry, bumped by every change
-- to `processors` (see the PostgreSQL migration of the same name: intake
-- plans from a copy of the registry kept in memory and checks, inside the
-- batch's transaction, that the generation has not moved).
create table processor_registry (
    id          integer primary key check (id = 1),
    generation  integer not null
);
insert into processor_registry (id, generation) values (1, 0);

create trigger processors_bump_generation_insert after insert on processors
begin
    update processor_registry set generation = generation + 1 where id = 1;
end;
create trigger processors_bump_generation_update after update on processors
begin
    update processor_registry set generation = generation + 1 where id = 1;
end;
create trigger processors_bump_generation_delete after delete on processors
begin
    update processor_registry set generation = generation + 1 where id = 1;
end;
