//! Processors' answers to deliveries: a gRPC response, a webhook body, an
//! OpenDSR status or a downstream completion record, picked by the first
//! input byte and converted as its push adapter does.
#![no_main]

use dsr_orchestrator_fuzz::fuzz_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_reply(data));
