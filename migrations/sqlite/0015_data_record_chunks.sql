-- Data records uploaded in chunks (see the PostgreSQL migration of the
-- same name).
create table data_record_chunks (
    instruction_id  text not null references instructions (id) on delete cascade,
    chunk           integer not null check (chunk >= 0),
    records         integer not null check (records > 0),
    sealed          text not null,
    primary key (instruction_id, chunk)
);
