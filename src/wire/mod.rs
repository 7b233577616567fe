//! Where protobuf messages meet domain types, and the only such place: the
//! API services decode what callers send here, and the push adapters
//! encode what they deliver to processors; [`json`] holds the JSON forms
//! of the messages processors exchange over HTTP. The generated messages that
//! carry personal data get their redacting `Debug` here too.
//!
//! Inbound, every conversion returns `Result<DomainType, Violations>` and
//! collects *all* problems of a message, each under its field path as named
//! in the contract (`subject_identities[1].value`,
//! `processor.adapter.grpc.endpoint`), so a caller fixes a request in one
//! round trip. Nested checks report paths relative to their own message and
//! the caller prefixes them with [`Violations::take`]. The domain
//! constructors own the rules; this module only decodes the wire (enum
//! numbers, durations, timestamps, the proto3 "zero means unset"
//! convention) and hands the parts over.
//!
//! Outbound conversions are total: a stored domain value always has a wire
//! form.
//!
//! When one part of a message fails to decode, the domain constructor that
//! needs it is still run with a neutral stand-in for that part, so its own
//! checks of the *other* fields are reported in the same answer. The
//! stand-in cannot escape: the failure is already recorded, so the result is
//! an error whatever the constructor says.

pub mod codec;
mod compliance;
mod enums;
mod ids;
mod instruction;
pub mod json;
mod json_bodies;
mod json_records;
pub mod opendsr;
mod processor;
mod protection;
mod record;
mod redact;
mod request;
mod time;
mod update;

pub use compliance::{exception_ground, list_filters, trail_check};
pub use enums::{
    instruction_order, instruction_state, instruction_state_pb, jurisdiction_filter,
    request_kind_filter, request_order, request_status, request_status_pb,
};
pub use ids::{parse_instruction_id, parse_processor_id, parse_request_id};
pub use instruction::{
    access_scope_of, data_record_pb, data_record_text_bytes, data_records_pb, deliver_request,
    instruction, instruction_result, instruction_result_pb, instruction_summary, lookback_of,
    snapshot_summary, upload_chunk,
};
pub use processor::{circuit_breaker, processor, processor_spec};
pub use protection::{
    MAX_CHECKED, checked_identities, reseal_batch, resealed, suppression_removal,
    suppression_statuses,
};
pub use record::completion_record;
pub use request::{extension_pb, identity_pb, new_request, request};
pub use time::{opt_timestamp, parse_timestamp, timestamp};
pub use update::apply_update;

use crate::domain::Violations;

/// Re-roots the violations of `result` under `prefix`.
pub fn within<T>(prefix: &str, result: Result<T, Violations>) -> Result<T, Violations> {
    let mut v = Violations::new();
    v.take(prefix, result).ok_or(v)
}

/// Records a violation of `field` unless `text` (a reason or a note the
/// record keeps) is 1 to 2,000 characters, not blank, and free of control
/// characters but line breaks and tabs.
pub fn check_reason(v: &mut Violations, field: &str, text: &str) {
    if text.trim().is_empty() || text.chars().count() > 2000 {
        v.add(field, "must be 1 to 2000 characters");
    } else {
        v.take(field, crate::domain::check_text(text, 1, 2000));
    }
}

/// `Ok(value)` when nothing was recorded in `v`. `value` is only `None`
/// after a failure that `Violations::take` recorded, so an empty collector
/// always comes with a value.
fn conclude<T>(v: Violations, value: Option<T>) -> Result<T, Violations> {
    match value {
        Some(value) if v.is_empty() => Ok(value),
        _ => Err(v),
    }
}

/// Field paths of `result`'s violations, for the tests' tables.
#[cfg(test)]
fn fields<T: std::fmt::Debug>(result: Result<T, Violations>) -> Vec<String> {
    match result {
        Ok(value) => panic!("expected violations, got {value:?}"),
        Err(v) => v.iter().map(|v| v.field.clone()).collect(),
    }
}
