use super::*;
use crate::domain::{
    DeletionException, InstructionId, InstructionState, Jurisdiction, Outcome, ProcessorId,
    RequestId, RequestKind, ResolvedBy,
};
use crate::wire::fields;

/// A resolved instruction as the store returns it.
pub(in crate::wire) fn view() -> InstructionView {
    let at = chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap();
    InstructionView {
        id: InstructionId::new(),
        request_id: RequestId::parse("6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6").unwrap(),
        processor_id: ProcessorId::parse("platform-vendor").unwrap(),
        kind: RequestKind::Delete,
        jurisdiction: Jurisdiction::Ccpa,
        submitted_at: at,
        state: InstructionState::Completed,
        attempts: 3,
        attempts_since_arm: 1,
        reminders: 1,
        last_error: Some("UNAVAILABLE: connection refused".into()),
        created_at: at,
        first_instructed_at: Some(at),
        acknowledged_at: Some(at),
        resolved_at: Some(at),
        next_attempt_at: None,
        lease_expires_at: None,
        reply_due_at: None,
        due_at: None,
        escalate_at: None,
        result: Some(InstructionResult::simple(Outcome::Completed).unwrap()),
        resolved_by: Some(ResolvedBy::Operator("confirmed by phone".into())),
        data_records: 0,
    }
}

#[test]
fn instructions_go_out_without_identities_or_history() {
    let view = view();
    let pb = instruction(&view);
    assert_eq!(pb.instruction_id, view.id.to_string());
    assert_eq!(pb.state, pb::InstructionState::Completed as i32);
    assert_eq!(pb.resolved_by, "operator: confirmed by phone");
    assert_eq!(
        pb.result.map(|r| r.outcome),
        Some(pb::Outcome::Completed as i32)
    );
    assert!(pb.subject_identities.is_empty() && pb.history.is_empty());
    let summary = pb.summary.unwrap();
    assert_eq!(summary.last_error, "UNAVAILABLE: connection refused");
    assert_eq!(summary.next_attempt_at, None);
    assert_eq!(summary, instruction_summary(&view));
}

fn denied() -> pb::InstructionResult {
    pb::InstructionResult {
        outcome: pb::Outcome::Denied as i32,
        exception: pb::DeletionException::CcpaLegalObligation as i32,
        explanation: "tax records are kept for 7 years".into(),
        sub_processors: vec![pb::SubProcessor {
            name: "Archive GmbH".into(),
            country: "DE".into(),
        }],
        ..Default::default()
    }
}

fn completed_with_records() -> pb::InstructionResult {
    pb::InstructionResult {
        outcome: pb::Outcome::Completed as i32,
        records: vec![pb::DataRecord {
            category: "identifiers".into(),
            value: "jane@example.com".into(),
            source: "signup".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn valid_results_round_trip() {
    for pb in [denied(), completed_with_records()] {
        let r = instruction_result(Some(pb.clone())).unwrap();
        assert_eq!(instruction_result_pb(&r), pb);
    }
    let r = instruction_result(Some(denied())).unwrap();
    assert_eq!(r.outcome, Outcome::Denied);
    assert_eq!(r.exception, Some(DeletionException::CcpaLegalObligation));
}

#[test]
fn bad_results_report_relative_paths() {
    type Base = fn() -> pb::InstructionResult;
    type Edit = fn(&mut pb::InstructionResult);
    let cases: &[(Base, Edit, &[&str])] = &[
        (denied, |r| r.outcome = 0, &["outcome"]),
        (denied, |r| r.outcome = 9, &["outcome"]),
        (denied, |r| r.exception = 0, &["exception"]),
        (denied, |r| r.exception = 99, &["exception"]),
        (denied, |r| r.explanation.clear(), &["explanation"]),
        (
            denied,
            |r| r.sub_processors[0].country = "de".into(),
            &["sub_processors[0].country"],
        ),
        (
            denied,
            |r| r.sub_processors[0].name.clear(),
            &["sub_processors[0].name"],
        ),
        (
            denied,
            |r| r.outcome = pb::Outcome::Failed as i32,
            &["exception", "reason"],
        ),
        (
            completed_with_records,
            |r| r.records[0].category.clear(),
            &["records[0].category"],
        ),
        (
            completed_with_records,
            |r| r.records[0].value.clear(),
            &["records[0].value"],
        ),
        (
            completed_with_records,
            |r| r.outcome = pb::Outcome::NoData as i32,
            &["records"],
        ),
        // A result's records (a callback's, a push processor's) are
        // held to the same clock as uploaded ones.
        (
            completed_with_records,
            |r| {
                let ahead = chrono::Utc::now() + chrono::TimeDelta::days(2);
                r.records[0].collected_at = Some(timestamp(ahead));
            },
            &["records[0].collected_at"],
        ),
    ];
    for (base, edit, expected) in cases {
        let mut r = base();
        edit(&mut r);
        assert_eq!(fields(instruction_result(Some(r))), *expected);
    }
    assert_eq!(fields(instruction_result(None)), [""]);
}
