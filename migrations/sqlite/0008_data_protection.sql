-- Personal data protected at rest (see the PostgreSQL migration of the
-- same name).
alter table instructions add column sealed_records text;
alter table instructions add column data_records integer not null default 0;
alter table requests add column identities_erased_at integer;
create index requests_to_erase on requests (closed_at, id)
    where identities_erased_at is null and status in ('COMPLETED', 'CANCELLED');
create table suppressions (
    hash            text primary key,
    identity_type   text not null,
    request_id      text not null,
    since           integer not null
);
