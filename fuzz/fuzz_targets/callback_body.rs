//! The HTTP callback API: the JSON body of each of its routes, picked by the
//! first input byte, parsed and converted as the route does.
#![no_main]

use dsr_orchestrator_fuzz::fuzz_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_body(data));
