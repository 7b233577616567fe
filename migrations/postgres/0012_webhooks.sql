-- Webhook processors: a fourth adapter kind, and the secret their
-- deliveries are signed with, sealed like personal data (AES-256-GCM,
-- bound to the processor's row: see src/seal.rs), never shown after it is
-- issued.
alter table processors drop constraint processors_adapter_kind_check;
alter table processors add constraint processors_adapter_kind_check
    check (adapter_kind in ('grpc', 'webhook', 'pull', 'manual'));
alter table processors add column webhook_secret text;
