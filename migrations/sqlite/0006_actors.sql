-- Who did it: the principal that submitted each request, and the one that
-- last changed each processor (registration, update, disabling, token
-- rotation). Rows written before authentication existed have none (null).
-- The actors of other changes ride in the request's events.
alter table requests add column submitted_by text;
alter table processors add column updated_by text;
