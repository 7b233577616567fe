//! The completion record, outbound only: it is written by the store and
//! never sent in. The wire message carries both the structured fields and
//! the canonical bytes with their digest, so a client can display the one
//! and verify the other.

use super::enums::ProtoEnum;
use super::instruction::sub_processor_pb;
use super::request::{extension_pb, verification_pb};
use super::{opt_timestamp, timestamp};
use crate::domain::{CompletionRecord, ProcessorLine};
use crate::pb;

/// The wire form of a completion record; `digest` and `canonical_json` are
/// the stored bytes and their SHA-256, passed through untouched.
pub fn completion_record(
    r: &CompletionRecord,
    digest: &str,
    canonical_json: Vec<u8>,
) -> pb::CompletionRecord {
    pb::CompletionRecord {
        request_id: r.request_id.to_string(),
        kind: r.kind.number(),
        jurisdiction: r.jurisdiction.number(),
        submitted_at: Some(timestamp(r.submitted_at)),
        received_at: Some(timestamp(r.received_at)),
        channel: r.channel.clone(),
        requester: r.requester.number(),
        verification: Some(verification_pb(&r.verification)),
        responded_at: Some(timestamp(r.responded_at)),
        outcome: r.outcome.number(),
        lines: r.lines.iter().map(line).collect(),
        denial_basis: r.denial_basis.clone(),
        note: r.note.clone(),
        digest: digest.to_string(),
        canonical_json,
        respond_by: opt_timestamp(r.respond_by),
        extension: r.extension.as_ref().map(extension_pb),
        receipt_confirmed_at: opt_timestamp(r.receipt_confirmed_at),
        on_time: r.on_time.unwrap_or(false),
        audit_head: r.audit_head.clone(),
        access_scope: r.access_scope.map_or(0, ProtoEnum::number),
        export_sha256: r.export_sha256.clone().unwrap_or_default(),
    }
}

fn line(l: &ProcessorLine) -> pb::ProcessorLine {
    pb::ProcessorLine {
        processor_id: l.processor_id.to_string(),
        display_name: l.display_name.clone(),
        role: l.role.clone(),
        country: l.country.clone(),
        instruction_id: l.instruction_id.to_string(),
        first_instructed_at: opt_timestamp(l.first_instructed_at),
        acknowledged_at: opt_timestamp(l.acknowledged_at),
        resolved_at: opt_timestamp(l.resolved_at),
        attempts: l.attempts,
        state: l.state.number(),
        exception: l.exception.map_or(0, ProtoEnum::number),
        explanation: l.explanation.clone(),
        reason: l.reason.clone(),
        sub_processors: l.sub_processors.iter().map(sub_processor_pb).collect(),
        resolved_by: l.resolved_by.clone(),
        data_records: l.data_records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        DeletionException, InstructionId, InstructionState, Jurisdiction, ProcessorId, RecordFacts,
        RequestId, RequestKind, Requester, Verification, VerificationLevel,
    };

    #[test]
    fn records_keep_their_lines_and_bytes() {
        let at = chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let line = ProcessorLine {
            processor_id: ProcessorId::parse("platform-vendor").unwrap(),
            display_name: "Platform Vendor Inc.".into(),
            role: "VENDOR".into(),
            country: "US".into(),
            instruction_id: InstructionId::new(),
            first_instructed_at: Some(at),
            acknowledged_at: None,
            resolved_at: Some(at),
            attempts: 2,
            state: InstructionState::Denied,
            exception: Some(DeletionException::GdprLegalClaims),
            explanation: "litigation hold".into(),
            reason: String::new(),
            sub_processors: vec![],
            resolved_by: "processor".into(),
            data_records: 0,
        };
        let facts = RecordFacts {
            request_id: RequestId::parse("6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6").unwrap(),
            kind: RequestKind::Delete,
            jurisdiction: Jurisdiction::Gdpr,
            submitted_at: at,
            received_at: at,
            channel: "web_form".into(),
            requester: Requester::AuthorizedAgent,
            verification: Verification::new(VerificationLevel::ReasonablyHigh, "id document")
                .unwrap(),
            access_scope: None,
            respond_by: at,
            extension: None,
            receipt_confirmed_at: None,
            cancel_reason: None,
            denied_unverified: false,
        };
        let record = CompletionRecord::assemble(facts, at, vec![line]);
        let json = record.canonical_json();
        let digest = CompletionRecord::digest_of(&json);
        let pb = completion_record(&record, &digest, json.clone());

        assert_eq!(pb.outcome, pb::OverallOutcome::NotFulfilled as i32);
        assert_eq!(pb.requester, pb::Requester::AuthorizedAgent as i32);
        assert!(pb.on_time, "answered at its deadline");
        assert_eq!((pb.digest, pb.canonical_json), (digest, json));
        assert_eq!(pb.denial_basis, record.denial_basis);
        let line = &pb.lines[0];
        assert_eq!(line.state, pb::InstructionState::Denied as i32);
        assert_eq!(
            line.exception,
            pb::DeletionException::GdprLegalClaims as i32
        );
        assert_eq!(line.acknowledged_at, None);
        assert_eq!(
            line.resolved_at,
            Some(prost_types::Timestamp {
                seconds: 1_750_000_000,
                nanos: 0
            })
        );
    }
}
