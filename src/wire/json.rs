//! The JSON forms of the messages processors exchange over HTTP: the
//! webhook deliveries the orchestrator POSTs, the answers it takes back,
//! and the bodies of the HTTP callback API (`docs/openapi.yaml`).
//!
//! They mirror the protobuf messages field for field, with the proto field
//! names (snake_case) and enum values by their full proto names
//! (`"OUTCOME_DELETED"`), as protobuf's JSON mapping prints them with
//! `preserving_proto_field_name`; timestamps are RFC 3339 in UTC. Inbound
//! bodies convert to the protobuf messages and then take the same path as
//! a gRPC call, so validation and errors are the gRPC API's own. A JSON
//! decoding error names the line and column, never the text around it (it
//! may be personal data).

use serde::{Deserialize, Serialize};

use super::json_bodies::object;
pub use super::json_bodies::{CompleteBody, PullBody, complete_pb, from_body, pull_pb, upload_pb};
pub use super::json_records::{DataRecord, UploadAnswer, UploadBody, record_json, record_pb};
pub use super::time::rfc3339 as time;
use crate::domain::Violations;
use crate::pb;

/// One identity of the subject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `IDENTITY_TYPE_EMAIL` and so on.
    #[serde(rename = "type")]
    pub identity_type: String,
    /// The value.
    pub value: String,
}

/// A sub-processor an instruction was passed on to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubProcessor {
    /// Its name.
    pub name: String,
    /// ISO 3166-1 alpha-2; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
}

/// A processor's result (`InstructionResult`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionResult {
    /// `OUTCOME_DELETED` and so on.
    pub outcome: String,
    /// With `OUTCOME_DENIED`: `DELETION_EXCEPTION_...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exception: String,
    /// With `OUTCOME_DENIED`: what is kept and why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub explanation: String,
    /// With `OUTCOME_FAILED`: why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Sub-processors it was passed on to.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "object::each"
    )]
    pub sub_processors: Vec<SubProcessor>,
    /// For access and portability: the data found.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "object::each"
    )]
    pub records: Vec<DataRecord>,
}

/// The `data` of a webhook delivery: `DeliverInstructionRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stable id; de-duplicate on it.
    pub instruction_id: String,
    /// The request it belongs to.
    pub request_id: String,
    /// `REQUEST_KIND_DELETE` and so on.
    pub kind: String,
    /// `JURISDICTION_CCPA` and so on.
    pub jurisdiction: String,
    /// When the person made the request.
    pub submitted_at: String,
    /// The identities of the types the processor accepts.
    pub subject_identities: Vec<Identity>,
    /// 1-based delivery attempt.
    pub attempt: u32,
    /// A reminder of an overdue outcome.
    pub reminder: bool,
    /// For access: `ACCESS_SCOPE_CATEGORIES` or
    /// `ACCESS_SCOPE_SPECIFIC_PIECES`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_scope: String,
    /// For access and portability: what was collected from this time on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lookback_start: String,
}

/// The `data` of a webhook cancel notice: `CancelInstructionRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// The instruction's id.
    pub instruction_id: String,
    /// Why the request was cancelled.
    pub reason: String,
}

/// What a webhook POST carries, as Standard Webhooks recommends: a type,
/// when it was sent, and the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<T> {
    /// `dsr.instruction.deliver`, `dsr.instruction.remind` or
    /// `dsr.instruction.cancel`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it was sent (RFC 3339).
    pub timestamp: String,
    /// The message.
    pub data: T,
}

/// A processor's answer to a webhook delivery (the body of a 2xx;
/// `DeliverInstructionResponse`). An empty body means accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryAnswer {
    /// `DISPOSITION_ACCEPTED` (the outcome follows by callback) or
    /// `DISPOSITION_DONE` (with `result`).
    pub disposition: String,
    /// The final result, with `DISPOSITION_DONE`.
    #[serde(default)]
    pub result: Option<InstructionResult>,
}

/// An instruction as the callback API answers it (`Instruction`, without
/// the operators' history).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Stable id.
    pub instruction_id: String,
    /// The request it belongs to.
    pub request_id: String,
    /// The processor it goes to.
    pub processor_id: String,
    /// `REQUEST_KIND_...`.
    pub kind: String,
    /// `JURISDICTION_...`.
    pub jurisdiction: String,
    /// When the person made the request.
    pub submitted_at: String,
    /// The identities, in pull answers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_identities: Vec<Identity>,
    /// `INSTRUCTION_STATE_...`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Reminders sent so far.
    pub reminders: u32,
    /// The result, once terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<InstructionResult>,
    /// Who recorded the result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resolved_by: String,
    /// Lease end of a leased instruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// In pulls of access instructions: categories or specific pieces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access_scope: String,
    /// In pulls of access and portability instructions: report what was
    /// collected from this time on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lookback_start: String,
}

/// Answer of `POST /v1/instructions/pull`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullAnswer {
    /// The leased instructions, with identities.
    pub instructions: Vec<Instruction>,
    /// Pulled instructions since cancelled, until acknowledged.
    pub cancellations: Vec<Cancellation>,
}

/// An error answer: the gRPC code's name, its message, and for
/// `INVALID_ARGUMENT` the field violations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    /// `INVALID_ARGUMENT`, `NOT_FOUND`, ...
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// The fields at fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_violations: Vec<FieldViolation>,
}

/// One field at fault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// Its path, as in the gRPC answer (`result.outcome`).
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// `serde_json`'s error without the text it quotes: where, and what kind.
pub fn decode_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Data => {
            "does not match the documented schema (a field of the wrong type, unknown or missing)"
        }
        serde_json::error::Category::Eof => "ends early",
    };
    format!(
        "the JSON body {what} at line {}, column {}",
        e.line(),
        e.column()
    )
}

fn opt_time(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref().map(time).unwrap_or_default()
}

/// The proto name of an enum number, `""` for a number it lacks.
macro_rules! name {
    ($enum:ty, $n:expr) => {
        <$enum>::try_from($n)
            .map(|e| e.as_str_name())
            .unwrap_or("")
            .to_string()
    };
}

/// The number of a proto enum name: empty is 0 (unset, which the gRPC
/// checks then report), an unknown name a violation of `field`.
macro_rules! number {
    ($enum:ty, $name:expr, $field:expr, $v:expr) => {
        if $name.is_empty() {
            0
        } else {
            match <$enum>::from_str_name(&$name) {
                Some(e) => e as i32,
                None => {
                    $v.add($field, "is not one of the documented values");
                    0
                }
            }
        }
    };
}

/// The wire form of an identity.
pub fn identity(i: &pb::SubjectIdentity) -> Identity {
    Identity {
        identity_type: name!(pb::IdentityType, i.r#type),
        value: i.value.clone(),
    }
}

/// A delivery's JSON from its protobuf message.
pub fn delivery(d: &pb::DeliverInstructionRequest) -> Delivery {
    Delivery {
        instruction_id: d.instruction_id.clone(),
        request_id: d.request_id.clone(),
        kind: name!(pb::RequestKind, d.kind),
        jurisdiction: name!(pb::Jurisdiction, d.jurisdiction),
        submitted_at: opt_time(&d.submitted_at),
        subject_identities: d.subject_identities.iter().map(identity).collect(),
        attempt: d.attempt,
        reminder: d.reminder,
        access_scope: if d.access_scope == 0 {
            String::new()
        } else {
            name!(pb::AccessScope, d.access_scope)
        },
        lookback_start: opt_time(&d.lookback_start),
    }
}

/// A result's JSON from its protobuf message.
pub fn result(r: &pb::InstructionResult) -> InstructionResult {
    InstructionResult {
        outcome: name!(pb::Outcome, r.outcome),
        exception: if r.exception == 0 {
            String::new()
        } else {
            name!(pb::DeletionException, r.exception)
        },
        explanation: r.explanation.clone(),
        reason: r.reason.clone(),
        sub_processors: r
            .sub_processors
            .iter()
            .map(|s| SubProcessor {
                name: s.name.clone(),
                country: s.country.clone(),
            })
            .collect(),
        records: r.records.iter().map(record_json).collect(),
    }
}

/// A result's protobuf message from its JSON; unknown enum names are
/// violations under `outcome` and `exception`.
pub fn result_pb(r: InstructionResult) -> Result<pb::InstructionResult, Violations> {
    let mut v = Violations::new();
    let outcome = number!(pb::Outcome, r.outcome, "outcome", v);
    let exception = number!(pb::DeletionException, r.exception, "exception", v);
    let result = pb::InstructionResult {
        outcome,
        exception,
        explanation: r.explanation,
        reason: r.reason,
        sub_processors: r
            .sub_processors
            .into_iter()
            .map(|s| pb::SubProcessor {
                name: s.name,
                country: s.country,
            })
            .collect(),
        records: r
            .records
            .into_iter()
            .enumerate()
            .map(|(i, d)| record_pb(d, &format!("records[{i}]"), &mut v))
            .collect(),
    };
    v.finish(|| result)
}

/// A webhook answer's protobuf message from its JSON.
pub fn answer_pb(a: DeliveryAnswer) -> Result<pb::DeliverInstructionResponse, Violations> {
    let mut v = Violations::new();
    let disposition = number!(
        pb::deliver_instruction_response::Disposition,
        a.disposition,
        "disposition",
        v
    );
    let result = a.result.map(|r| v.take("result", result_pb(r)));
    v.finish(|| pb::DeliverInstructionResponse {
        disposition,
        result: result.flatten(),
    })
}

/// An instruction's JSON from its protobuf message.
pub fn instruction(i: &pb::Instruction) -> Instruction {
    Instruction {
        instruction_id: i.instruction_id.clone(),
        request_id: i.request_id.clone(),
        processor_id: i.processor_id.clone(),
        kind: name!(pb::RequestKind, i.kind),
        jurisdiction: name!(pb::Jurisdiction, i.jurisdiction),
        submitted_at: opt_time(&i.submitted_at),
        subject_identities: i.subject_identities.iter().map(identity).collect(),
        state: name!(pb::InstructionState, i.state),
        attempts: i.attempts,
        reminders: i.reminders,
        result: i.result.as_ref().map(result),
        resolved_by: i.resolved_by.clone(),
        lease_expires_at: i.lease_expires_at.as_ref().map(time),
        access_scope: if i.access_scope == 0 {
            String::new()
        } else {
            name!(pb::AccessScope, i.access_scope)
        },
        lookback_start: opt_time(&i.lookback_start),
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
