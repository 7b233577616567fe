-- Core schema of the orchestrator. Append-only: never edit a migration that
-- has shipped; add a new one.
--
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC): exact,
-- portable between SQLite and PostgreSQL, and cheap to index and compare.
-- Enumerations are upper-case TEXT guarded by CHECK constraints, so an
-- illegal state cannot be written even by a buggy query.

-- Processors: everyone who holds personal data on the business's behalf.
create table processors (
    id                      text primary key,
    display_name            text not null,
    role                    text not null check (role in ('GROUP_COMPANY', 'VENDOR', 'DISTRIBUTOR', 'SERVICE_PROVIDER', 'CONTRACTOR', 'INTERNAL_SYSTEM')),
    country                 text not null check (length(country) = 2),
    -- The validated spec as JSON (kinds, identity types, adapter, retry
    -- policy, timeouts): read whole, never queried by field.
    spec                    text not null,
    -- Denormalised from spec: the dispatcher selects push processors by it.
    adapter_kind            text not null check (adapter_kind in ('grpc', 'pull', 'manual')),
    status                  text not null check (status in ('ACTIVE', 'DISABLED')),
    -- SHA-256 (hex) of the callback token; the token itself is never stored.
    token_hash              text not null unique,
    created_at              integer not null,
    updated_at              integer not null
);

-- Requests. The subject's identities live in their own column so that a
-- later migration can seal (encrypt) or purge them without touching the
-- rest of the row.
create table requests (
    id                      text primary key,
    kind                    text not null check (kind in ('ACCESS', 'DELETE', 'PORTABILITY', 'CORRECT', 'OBJECT', 'WITHDRAW_CONSENT')),
    jurisdiction            text not null check (jurisdiction in ('CCPA', 'GDPR', 'APPI', 'OTHER')),
    status                  text not null check (status in ('RECEIVED', 'IN_PROGRESS', 'COMPLETED', 'CANCELLED')),
    submitted_at            integer not null,
    received_at             integer not null,
    closed_at               integer,
    channel                 text not null,
    requester               text not null check (requester in ('SELF', 'AUTHORIZED_AGENT', 'PARENT_OR_GUARDIAN')),
    verification_level      text not null check (verification_level in ('NONE', 'REASONABLE', 'REASONABLY_HIGH')),
    verification_method     text not null,
    labels                  text not null,
    identity_types          text not null,
    subject                 text,
    -- SHA-256 of the submitted content: an idempotent retry matches it.
    fingerprint             text not null,
    cancel_reason           text,
    -- Instructions not yet terminal. Decremented in the same statement that
    -- locks the row, so exactly one transaction sees it reach zero and
    -- writes the completion record.
    open_instructions       integer not null check (open_instructions >= 0),
    -- Sequence number of the request's latest event (see request_events).
    event_seq               integer not null,
    check ((status in ('COMPLETED', 'CANCELLED')) = (closed_at is not null)),
    check (status <> 'COMPLETED' or open_instructions = 0)
);

create index requests_by_submission on requests (submitted_at desc, id desc);

-- Instructions: one per (request, processor). The scheduling columns are
-- each meaningful in exactly one state, which the CHECKs enforce.
create table instructions (
    id                      text primary key,
    request_id              text not null references requests (id),
    processor_id            text not null references processors (id),
    -- Immutable facts of the request, copied so that the hot paths (claim,
    -- delivery, listing) never join requests.
    kind                    text not null,
    jurisdiction            text not null,
    submitted_at            integer not null,
    state                   text not null check (state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED', 'COMPLETED', 'NO_DATA', 'DENIED', 'FAILED', 'CANCELLED', 'ESCALATED')),
    -- The identities this processor accepts (personal data; sealable later).
    payload                 text,
    attempts                integer not null default 0 check (attempts >= 0),
    attempts_since_arm      integer not null default 0 check (attempts_since_arm >= 0),
    reminders               integer not null default 0 check (reminders >= 0),
    -- PENDING push instructions: when the next delivery is due.
    next_attempt_at         integer,
    -- DELIVERING: who holds the lease and until when.
    lease_owner             text,
    lease_expires_at        integer,
    -- ACKNOWLEDGED: when the outcome is due before a reminder goes out.
    reply_due_at            integer,
    last_error              text,
    created_at              integer not null,
    first_instructed_at     integer,
    acknowledged_at         integer,
    resolved_at             integer,
    -- The InstructionResult as JSON, and who recorded it.
    result                  text,
    resolved_by             text,
    unique (request_id, processor_id),
    check ((state = 'DELIVERING') = (lease_expires_at is not null and lease_owner is not null)),
    check (state = 'ACKNOWLEDGED' or reply_due_at is null),
    check ((state in ('COMPLETED', 'NO_DATA', 'DENIED', 'FAILED', 'CANCELLED')) = (resolved_at is not null)),
    check ((state in ('COMPLETED', 'NO_DATA', 'DENIED', 'FAILED')) = (result is not null))
);

-- The dispatcher's three kinds of due work, each a small partial index.
create index instructions_due_pending on instructions (processor_id, next_attempt_at) where state = 'PENDING';
create index instructions_due_lease on instructions (processor_id, lease_expires_at) where state = 'DELIVERING';
create index instructions_due_reply on instructions (processor_id, reply_due_at) where state = 'ACKNOWLEDGED';
create index instructions_by_request on instructions (request_id);
create index instructions_by_state on instructions (state, id);

-- Every delivery attempt and its result: the error history an operator
-- reads when an instruction is escalated.
create table delivery_attempts (
    instruction_id          text not null references instructions (id),
    attempt                 integer not null check (attempt >= 1),
    started_at              integer not null,
    finished_at             integer,
    result                  text not null check (result in ('pending', 'accepted', 'outcome', 'retryable_error', 'fatal_error', 'lease_expired', 'pulled', 'reminder')),
    error_code              text,
    error_message           text,
    primary key (instruction_id, attempt)
);

-- The append-only history of each request, in order: what WatchRequest
-- streams. The event body is JSON without personal data.
create table request_events (
    request_id              text not null references requests (id),
    seq                     integer not null check (seq >= 1),
    occurred_at             integer not null,
    body                    text not null,
    primary key (request_id, seq)
);

-- One immutable record per finished request. The primary key is what makes
-- "exactly one record" hold even if two writers race.
create table completion_records (
    request_id              text primary key references requests (id),
    canonical_json          text not null,
    digest                  text not null check (length(digest) = 64),
    created_at              integer not null
);

-- The record never changes after it is written (the proof would be worthless
-- otherwise); the database refuses even our own mistakes.
create trigger completion_records_no_update before update on completion_records
begin
    select raise(abort, 'completion records are immutable');
end;
