-- Personal data protected at rest.
--
-- requests.subject and instructions.payload keep their columns but now
-- hold sealed values (`v1:<key id>:...`, see src/seal.rs); a processor's
-- data records move out of instructions.result into sealed_records, with
-- their count beside them for the completion record. Rows written before
-- hold JSON until the server's resealing pass seals them.
alter table instructions add column sealed_records text;
alter table instructions add column data_records integer not null default 0;

-- When the identifiers, payloads and data records of a finished request
-- were erased (null: not yet).
alter table requests add column identities_erased_at bigint;

-- The requests whose personal data the eraser still has to take: finished,
-- not yet erased; few at any time.
create index requests_to_erase on requests (closed_at, id)
    where identities_erased_at is null and status in ('COMPLETED', 'CANCELLED');

-- The suppression list (Cal. Civ. Code 1798.105(c)(2)): keyed hashes of
-- the normal forms of the identifiers of people whose deletion was carried
-- out, so they are not collected or sold again. It outlives the requests
-- (no reference to them is checked).
create table suppressions (
    hash            text primary key,
    identity_type   text not null,
    request_id      text not null,
    since           bigint not null
);
