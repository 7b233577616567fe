//! The page tokens of the three list methods: any UTF-8 string (a token is
//! a protobuf `string`) decoded as a `ListRequests` cursor, a
//! `ListProcessors` key and a `ListInstructions` key.
#![no_main]

use dsr_orchestrator_fuzz::rpc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        for outcome in rpc::page_token(token) {
            if let Err(v) = outcome {
                assert!(!v.is_empty(), "a token rejected without a violation");
            }
        }
    }
});
