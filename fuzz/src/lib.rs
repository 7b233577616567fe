//! The fuzz targets' shared half: [`rpc`] decodes and converts every
//! request message of the public services as the services do, and every
//! body of the HTTP callback API as its routes do; [`replies`] converts
//! processors' answers to deliveries as the push adapters do.
//! [`fuzz_service`] is the body of the four per-service targets,
//! [`fuzz_body`] that of `callback_body`, [`fuzz_reply`] that of
//! `processor_answer`.

pub mod replies;
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

/// Runs one input of `processor_answer`: the first byte picks the kind of
/// answer (of [`replies::REPLIES`]), the rest is converted as its push
/// adapter converts it. Protobuf messages prost cannot decode are skipped.
pub fn fuzz_reply(data: &[u8]) {
    if let Some((reply, bytes)) = rpc::select(&replies::REPLIES, data)
        && let Some(converted) = reply.convert(bytes)
    {
        replies::check(reply, &converted);
    }
}
