//! The fuzz targets' shared half: [`rpc`] decodes and converts every
//! request message of the public services as the services do, and every
//! body of the HTTP callback API as its routes do; [`fuzz_service`] is the
//! body of the four per-service targets, [`fuzz_body`] that of
//! `callback_body`.

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

/// Runs one input of `callback_body`: the first byte picks the route (of
/// [`rpc::BODIES`]), the rest is parsed as its JSON body and converted.
/// Bodies that are not the route's JSON are skipped, as the route refuses
/// them before any conversion.
pub fn fuzz_body(data: &[u8]) {
    if let Some((body, json)) = rpc::select(&rpc::BODIES, data)
        && let Some(outcome) = body.convert(json)
    {
        rpc::check(body, &outcome);
    }
}
