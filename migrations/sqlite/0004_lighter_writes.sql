-- Lookups by request use the unique (request_id, processor_id) index; the
-- single-column one only doubled its cost. The dispatcher's next-due probe
-- reads the per-processor due indexes, so the global one is unused.
-- (PostgreSQL also narrows instructions_by_state to settled states; SQLite
-- only maintains an index when its columns change and would not use the
-- partial index for a one-state filter, so it keeps the full one.)
drop index instructions_by_request;
drop index instructions_pending_due;
