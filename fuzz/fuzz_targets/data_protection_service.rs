//! `DataProtectionService`: the request message of each of its RPCs, picked
//! by the first input byte, decoded with prost and converted as the service
//! does.
#![no_main]

use dsr_orchestrator_fuzz::{fuzz_service, rpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_service(&rpc::DATA_PROTECTION_SERVICE, data));
