//! Instructions and results: the `InstructionResult` a processor or an
//! operator reports, and the views of an instruction sent back.
//!
//! A result is proof for the completion record, so its cross-field rules (a
//! denial names its legal ground, a failure its reason) live in
//! [`InstructionResult::new`]; this module decodes the enums and lists and
//! passes them on.

use super::enums::{ProtoEnum, optional, required};
use super::{conclude, opt_timestamp, parse_timestamp, timestamp};
use crate::domain::{
    COLLECTED_AHEAD, DataRecord, InstructionResult, InstructionSnapshot, InstructionView,
    SubProcessor, Violations, check_records,
};
use crate::pb;

/// Checks a reported result. Paths are relative to the result message
/// (`outcome`, `records[2].category`); the caller prefixes them with its
/// field name, usually `result`. A missing message is reported at the empty
/// path as "is required".
pub fn instruction_result(
    r: Option<pb::InstructionResult>,
) -> Result<InstructionResult, Violations> {
    let Some(r) = r else {
        return Err(Violations::one("", "is required"));
    };
    let mut v = Violations::new();
    let outcome = v.take("outcome", required(r.outcome));
    let exception = v.take("exception", optional(r.exception));
    let sub_processors = r
        .sub_processors
        .into_iter()
        .map(|s| SubProcessor {
            name: s.name,
            country: s.country,
        })
        .collect();
    let records = data_records(r.records, &mut v);
    // No stand-in for a bad outcome or exception: the cross-field rules
    // depend on both, and a guess would add complaints the caller never
    // caused.
    let result = match (outcome, exception) {
        (Some(outcome), Some(exception)) => v.take(
            "",
            InstructionResult::new(
                outcome,
                exception,
                &r.explanation,
                &r.reason,
                sub_processors,
                records,
            ),
        ),
        _ => None,
    };
    conclude(v, result)
}

/// The wire form of a result.
pub fn instruction_result_pb(r: &InstructionResult) -> pb::InstructionResult {
    pb::InstructionResult {
        outcome: r.outcome.number(),
        exception: r.exception.map_or(0, ProtoEnum::number),
        explanation: r.explanation.clone(),
        reason: r.reason.clone(),
        sub_processors: r.sub_processors.iter().map(sub_processor_pb).collect(),
        records: data_records_pb(&r.records),
    }
}

/// Most records in one uploaded chunk.
pub const MAX_CHUNK_RECORDS: usize = 1000;

/// Checks one uploaded chunk: its instruction id, its index (below
/// `max_chunks`), and 1 to [`MAX_CHUNK_RECORDS`] valid records within the
/// bytes a result may hold.
pub fn upload_chunk(
    m: pb::UploadDataRecordsRequest,
    max_chunks: u32,
) -> Result<(crate::domain::InstructionId, u32, Vec<DataRecord>), Violations> {
    let mut v = Violations::new();
    let id = v.take(
        "",
        super::parse_instruction_id(&m.instruction_id, "instruction_id"),
    );
    if m.chunk_index >= max_chunks {
        v.add("chunk_index", format!("must be below {max_chunks}"));
    }
    if m.records.is_empty() || m.records.len() > MAX_CHUNK_RECORDS {
        v.add(
            "records",
            format!("must hold 1 to {MAX_CHUNK_RECORDS} records"),
        );
    }
    let records = data_records(m.records, &mut v);
    check_records(&records, &mut v);
    match id {
        Some(id) if v.is_empty() => Ok((id, m.chunk_index, records)),
        _ => Err(v),
    }
}

/// Data records as sent, with a violation under `records[i].collected_at`
/// for each time that does not convert or lies more than
/// [`COLLECTED_AHEAD`] ahead of now (their other rules are checked with the
/// result's, or the chunk's). "Now" is the wall clock, not the service's
/// clock: the rule catches a processor's clock or unit gone wrong, and a
/// processor's clock is a wall clock (with a day's room, a test's clock
/// never meets it).
fn data_records(records: Vec<pb::DataRecord>, v: &mut Violations) -> Vec<DataRecord> {
    let latest = chrono::Utc::now() + COLLECTED_AHEAD;
    records
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let at = format!("records[{i}].collected_at");
            let collected_at = v.take(&at, parse_timestamp(d.collected_at, "")).flatten();
            if collected_at.is_some_and(|t| t > latest) {
                let hours = COLLECTED_AHEAD.num_hours();
                v.add(at, format!("must not be more than {hours} hours after now"));
            }
            data_record(d, collected_at)
        })
        .collect()
}

/// The bytes of a record's texts as a result's limit counts them
/// ([`DataRecord::text_bytes`]).
pub fn data_record_text_bytes(d: &pb::DataRecord) -> usize {
    data_record(d.clone(), None).text_bytes()
}

/// A data record as sent.
fn data_record(d: pb::DataRecord, collected_at: Option<crate::domain::Timestamp>) -> DataRecord {
    DataRecord {
        category: d.category,
        category_label: d.category_label,
        field: d.field,
        value: d.value,
        source: d.source,
        purpose: d.purpose,
        collected_at,
        disclosed_to: d.disclosed_to,
        sold_or_shared: d.sold_or_shared,
    }
}

/// The wire form of data records.
pub fn data_records_pb(records: &[DataRecord]) -> Vec<pb::DataRecord> {
    records.iter().map(data_record_pb).collect()
}

/// The wire form of one data record.
pub fn data_record_pb(d: &DataRecord) -> pb::DataRecord {
    pb::DataRecord {
        category: d.category.clone(),
        value: d.value.clone(),
        source: d.source.clone(),
        field: d.field.clone(),
        purpose: d.purpose.clone(),
        collected_at: opt_timestamp(d.collected_at),
        disclosed_to: d.disclosed_to.clone(),
        sold_or_shared: d.sold_or_shared,
        category_label: d.category_label.clone(),
    }
}

/// The wire form of a sub-processor.
pub(super) fn sub_processor_pb(s: &SubProcessor) -> pb::SubProcessor {
    pb::SubProcessor {
        name: s.name.clone(),
        country: s.country.clone(),
    }
}

/// The summary line of an instruction, as listed in its request.
pub fn instruction_summary(i: &InstructionView) -> pb::InstructionSummary {
    snapshot_summary(&i.into())
}

/// The summary line of an instruction as an event shows it.
pub fn snapshot_summary(i: &InstructionSnapshot) -> pb::InstructionSummary {
    pb::InstructionSummary {
        instruction_id: i.id.to_string(),
        processor_id: i.processor_id.to_string(),
        state: i.state.number(),
        attempts: i.attempts,
        last_error: i.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(i.created_at)),
        first_instructed_at: opt_timestamp(i.first_instructed_at),
        acknowledged_at: opt_timestamp(i.acknowledged_at),
        resolved_at: opt_timestamp(i.resolved_at),
        next_attempt_at: opt_timestamp(i.next_attempt_at),
        due_at: opt_timestamp(i.due_at),
        escalate_at: opt_timestamp(i.escalate_at),
    }
}

/// The wire form of an instruction, without `subject_identities`,
/// `history` and what an access request asks: the caller adds the
/// identities and the request's terms (pull answers only) and the delivery
/// attempts (operator views only).
pub fn instruction(i: &InstructionView) -> pb::Instruction {
    pb::Instruction {
        instruction_id: i.id.to_string(),
        request_id: i.request_id.to_string(),
        processor_id: i.processor_id.to_string(),
        kind: i.kind.number(),
        jurisdiction: i.jurisdiction.number(),
        submitted_at: Some(timestamp(i.submitted_at)),
        subject_identities: Vec::new(),
        state: i.state.number(),
        attempts: i.attempts,
        reminders: i.reminders,
        result: i.result.as_ref().map(instruction_result_pb),
        resolved_by: i
            .resolved_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        history: Vec::new(),
        lease_expires_at: opt_timestamp(i.lease_expires_at),
        summary: Some(instruction_summary(i)),
        access_scope: 0,
        lookback_start: None,
        records_unreadable: false,
    }
}

/// What a push adapter delivers: the instruction, the identities its
/// processor accepts, and for access and portability what the request
/// asks (from `request`, its facts).
pub fn deliver_request(
    i: &InstructionView,
    identities: &[crate::domain::SubjectIdentity],
    reminder: bool,
    request: Option<&crate::domain::RequestSummary>,
) -> pb::DeliverInstructionRequest {
    pb::DeliverInstructionRequest {
        instruction_id: i.id.to_string(),
        request_id: i.request_id.to_string(),
        kind: pb::RequestKind::from(i.kind) as i32,
        jurisdiction: pb::Jurisdiction::from(i.jurisdiction) as i32,
        submitted_at: Some(super::timestamp(i.submitted_at)),
        subject_identities: identities.iter().map(super::identity_pb).collect(),
        attempt: i.attempts,
        reminder,
        access_scope: access_scope_of(request),
        lookback_start: lookback_of(request),
    }
}

/// An access request's scope on the wire (0 for none, or no request).
pub fn access_scope_of(request: Option<&crate::domain::RequestSummary>) -> i32 {
    request
        .and_then(|r| r.access_scope)
        .map_or(0, ProtoEnum::number)
}

/// The start of an access or portability request's look-back on the
/// wire, if it has one.
pub fn lookback_of(
    request: Option<&crate::domain::RequestSummary>,
) -> Option<prost_types::Timestamp> {
    request.and_then(|r| opt_timestamp(r.lookback_start))
}

#[cfg(test)]
#[path = "instruction_tests.rs"]
pub(super) mod tests;
