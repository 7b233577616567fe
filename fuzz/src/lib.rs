//! The fuzz targets' shared half: [`rpc`] decodes and converts every
//! request message of the public services as the services do, and
//! [`fuzz_service`] is the body of the three per-service targets.

pub mod rpc;

/// Runs one input of a per-service target: the first byte picks the RPC
/// of `service`, the rest is decoded as its request message and converted.
/// Undecodable messages are skipped; a panic is what the fuzzer looks for,
/// including the ones [`rpc::check`] raises for a malformed rejection.
pub fn fuzz_service(service: &[rpc::Rpc], data: &[u8]) {
    if let Some((rpc, message)) = rpc::select(service, data)
        && let Some(outcome) = rpc.convert(message)
    {
        rpc::check(rpc, &outcome);
    }
}
