-- Circuit breakers (see the PostgreSQL migration of the same name).
create table circuit_breakers (
    processor_id    text primary key,
    -- When it opened, and after how many consecutive failures.
    opened_at       integer not null,
    failures        integer not null,
    -- When a probe may go, and the cool-down that set it (it doubles
    -- after a failed probe, up to a bound).
    retry_at        integer not null,
    cooldown_ms     integer not null,
    -- The lease of the probe in flight, if any: one replica probes.
    probe_until     integer
);
