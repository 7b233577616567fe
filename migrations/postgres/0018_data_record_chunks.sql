-- Data records a processor uploads in chunks (UploadDataRecords), for
-- answers too large for one message: one row per chunk, sealed like
-- instructions.sealed_records and bound to its instruction and index. The
-- primary key makes a repeated chunk a no-op. Erasure deletes them with the
-- request's other personal data; the retention purge, with their
-- instruction.
create table data_record_chunks (
    instruction_id  text not null references instructions (id) on delete cascade,
    chunk           integer not null check (chunk >= 0),
    records         integer not null check (records > 0),
    sealed          text not null,
    primary key (instruction_id, chunk)
);
