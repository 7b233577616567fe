-- Cancel notices (see the PostgreSQL migration of the same name).
create table cancel_notices (
    instruction_id      text primary key,
    request_id          text not null,
    processor_id        text not null,
    reason              text not null,
    attempts            integer not null default 0,
    next_attempt_at     integer not null,
    created_at          integer not null
);
create index cancel_notices_due on cancel_notices (processor_id, next_attempt_at);
