-- Cancel notices: when a request is cancelled, every processor that had
-- received one of its instructions is told, through its own adapter, with
-- retries, surviving a crash. A row is written in the cancelling
-- transaction and deleted once the processor has the notice (a push
-- processor answered; a pull processor acknowledged it). `next_attempt_at`
-- doubles as the lease of a notice being sent. No personal data: the
-- instruction id and the caller's reason only.
create table cancel_notices (
    instruction_id      text primary key,
    request_id          text not null,
    processor_id        text not null,
    reason              text not null,
    attempts            integer not null default 0,
    next_attempt_at     bigint not null,
    created_at          bigint not null
);
create index cancel_notices_due on cancel_notices (processor_id, next_attempt_at);
