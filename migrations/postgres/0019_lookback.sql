-- How far back an access or portability request reaches, as the person
-- asked (null: the law's default; see src/domain/lookback.rs).
alter table requests add column lookback_start bigint;
