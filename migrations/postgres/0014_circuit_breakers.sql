-- Circuit breakers: a push processor that keeps failing is left alone for
-- a cool-down, then probed with one delivery. A row exists only while a
-- processor's breaker is open; every replica reads it, so the whole
-- deployment stops and resumes together. Kept apart from `processors`:
-- changing a processor row moves the registry's generation, which makes
-- intake plan again.
create table circuit_breakers (
    processor_id    text primary key,
    -- When it opened, and after how many consecutive failures.
    opened_at       bigint not null,
    failures        integer not null,
    -- When a probe may go, and the cool-down that set it (it doubles
    -- after a failed probe, up to a bound).
    retry_at        bigint not null,
    cooldown_ms     bigint not null,
    -- The lease of the probe in flight, if any: one replica probes.
    probe_until     bigint
);
