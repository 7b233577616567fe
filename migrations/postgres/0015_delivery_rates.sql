-- Deliveries per second, counted across every replica. Each rate-limited
-- push processor has one row: `paid_until` advances by 1/rate of a second
-- for every delivery started (from now, if it lies in the past), and a
-- claim may start as many as fit before a second from now, so at most a
-- second's worth go at once after a quiet spell (a token bucket kept as one
-- time). A claim reads and moves it while it holds the processor's claim
-- lock, so replicas draw on one budget. Kept apart from `processors` for the
-- reason given for `circuit_breakers`: a processor row that changes moves
-- the registry's generation.
create table delivery_rates (
    processor_id    text primary key,
    paid_until      bigint not null
);
