-- How far back an access or portability request reaches (see the
-- PostgreSQL migration of the same name).
alter table requests add column lookback_start integer;
