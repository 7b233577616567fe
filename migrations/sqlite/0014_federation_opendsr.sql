-- no-transaction
-- Two more push adapter kinds, `dsr` (federation) and `opendsr` (see the
-- PostgreSQL migration of the same name). SQLite cannot change a CHECK
-- constraint in place, so `processors` is rebuilt as in 0009, with foreign
-- keys off while the old table is dropped, the whole in one transaction.
pragma foreign_keys = off;
begin;
create table processors_next (
    id                      text primary key,
    display_name            text not null,
    role                    text not null check (role in ('GROUP_COMPANY', 'VENDOR', 'DISTRIBUTOR', 'SERVICE_PROVIDER', 'CONTRACTOR', 'INTERNAL_SYSTEM')),
    country                 text not null check (length(country) = 2),
    spec                    text not null,
    adapter_kind            text not null check (adapter_kind in ('grpc', 'webhook', 'dsr', 'opendsr', 'pull', 'manual')),
    status                  text not null check (status in ('ACTIVE', 'DISABLED')),
    token_hash              text not null unique,
    created_at              integer not null,
    updated_at              integer not null,
    updated_by              text,
    webhook_secret          text
);
insert into processors_next (id, display_name, role, country, spec, adapter_kind, status,
                             token_hash, created_at, updated_at, updated_by, webhook_secret)
    select id, display_name, role, country, spec, adapter_kind, status,
           token_hash, created_at, updated_at, updated_by, webhook_secret
    from processors;
drop table processors;
alter table processors_next rename to processors;
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
update processor_registry set generation = generation + 1 where id = 1;
commit;
pragma foreign_keys = on;
