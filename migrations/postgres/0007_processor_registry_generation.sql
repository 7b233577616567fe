-- A generation number for the processor registry, bumped by every statement
-- that changes `processors`.
--
-- Intake decides each request's fan-out from the registry. Its writer keeps
-- the registry in memory instead of reading and decoding every processor
-- for each batch, and states the generation it planned with inside the
-- batch's own statement: the batch is written only if the generation is
-- still that one, otherwise it is planned again from a fresh read. A
-- change made on any replica is therefore seen by the next batch, exactly
-- as when every batch read the registry.
create table processor_registry (
    id          integer primary key check (id = 1),
    generation  bigint not null
);
insert into processor_registry (id, generation) values (1, 0);

create function processor_registry_bump() returns trigger language plpgsql as $$
begin
    update processor_registry set generation = generation + 1 where id = 1;
    return null;
end;
$$;

create trigger processors_bump_generation after insert or update or delete on processors
    for each statement execute function processor_registry_bump();
