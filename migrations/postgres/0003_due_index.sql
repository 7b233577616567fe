-- The dispatcher asks "when is the next push instruction due?" on every
-- pass; this index answers from its first entry instead of scanning every
-- processor's pending rows.
create index instructions_pending_due on instructions (next_attempt_at) where state = 'PENDING';
