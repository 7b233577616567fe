-- Two more push adapter kinds: `dsr` (another dsr-orchestrator, federation)
-- and `opendsr` (an OpenDSR processor).
alter table processors drop constraint processors_adapter_kind_check;
alter table processors add constraint processors_adapter_kind_check
    check (adapter_kind in ('grpc', 'webhook', 'dsr', 'opendsr', 'pull', 'manual'));
