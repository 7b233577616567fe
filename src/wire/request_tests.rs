//! Tests of `request`.

use super::*;
use crate::domain::{Jurisdiction, RequestKind, Requester};
use crate::wire::fields;
use chrono::DateTime;

fn now() -> Timestamp {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

fn valid() -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        request_id: "6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6".into(),
        kind: pb::RequestKind::Delete as i32,
        jurisdiction: pb::Jurisdiction::Ccpa as i32,
        subject_identities: vec![
            pb::SubjectIdentity {
                r#type: pb::IdentityType::Email as i32,
                value: "jane@example.com".into(),
            },
            pb::SubjectIdentity {
                r#type: pb::IdentityType::AccountId as i32,
                value: "A-1001".into(),
            },
        ],
        submitted_at: Some(prost_types::Timestamp {
            seconds: 1_749_999_000,
            nanos: 123_456_789,
        }),
        channel: "web_form".into(),
        requester: pb::Requester::Self_ as i32,
        verification: Some(pb::Verification {
            level: pb::VerificationLevel::Reasonable as i32,
            method: "email link".into(),
        }),
        processor_ids: vec!["zeta-co".into(), "alpha-co".into()],
        labels: HashMap::from([("ticket".into(), "T-1".into())]),
        access_scope: 0,
        requester_evidence: String::new(),
        lookback_start: None,
    }
}

#[test]
fn a_valid_request_converts() {
    let r = new_request(valid(), now()).unwrap();
    assert_eq!(r.kind, RequestKind::Delete);
    assert_eq!(r.jurisdiction, Jurisdiction::Ccpa);
    assert_eq!(r.requester, Requester::SelfRequest);
    assert_eq!(r.subject.identities().len(), 2);
    assert_eq!(
        r.submitted_at.map(|t| t.timestamp_subsec_nanos()),
        Some(123_456_000),
        "truncated to micros"
    );
    let ids: Vec<_> = r.processor_ids.iter().map(ProcessorId::as_str).collect();
    assert_eq!(ids, ["zeta-co", "alpha-co"], "in the caller's order");
}

#[test]
fn submitted_at_is_optional_and_bounded() {
    let mut req = valid();
    req.submitted_at = None;
    assert_eq!(new_request(req, now()).unwrap().submitted_at, None);

    let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    let mut req = valid();
    req.submitted_at = Some(at(now().timestamp() + 5));
    assert!(new_request(req, now()).is_ok(), "within the clock skew");
    for bad in [
        at(now().timestamp() + 6),
        at(EARLIEST_SUBMISSION_SECONDS - 1),
        prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: -1,
        },
    ] {
        let mut req = valid();
        req.submitted_at = Some(bad);
        assert_eq!(fields(new_request(req, now())), ["submitted_at"], "{bad:?}");
    }
}

#[test]
fn every_problem_is_reported_with_its_path() {
    type Edit = fn(&mut pb::SubmitRequestRequest);
    let cases: &[(Edit, &[&str])] = &[
        (|r| r.request_id = "nope".into(), &["request_id"]),
        (|r| r.kind = 0, &["kind"]),
        (|r| r.jurisdiction = 99, &["jurisdiction"]),
        (|r| r.subject_identities.clear(), &["subject_identities"]),
        (
            |r| r.subject_identities[1].value.clear(),
            &["subject_identities[1].value"],
        ),
        (
            |r| r.subject_identities[0].r#type = 0,
            &["subject_identities[0].type"],
        ),
        (
            |r| r.subject_identities[1] = r.subject_identities[0].clone(),
            &["subject_identities[1]"],
        ),
        (|r| r.channel = "Web Form".into(), &["channel"]),
        (|r| r.requester = 0, &["requester"]),
        (|r| r.verification = None, &["verification"]),
        (
            |r| r.verification.as_mut().unwrap().level = 0,
            &["verification.level"],
        ),
        (
            |r| r.verification.as_mut().unwrap().method = "x".repeat(513),
            &["verification.method"],
        ),
        (
            |r| r.processor_ids[1] = "Alpha".into(),
            &["processor_ids[1]"],
        ),
        (
            |r| r.processor_ids.push("zeta-co".into()),
            &["processor_ids[2]"],
        ),
        (
            |r| r.processor_ids = (0..101).map(|i| format!("p-{i}")).collect(),
            &["processor_ids"],
        ),
        (
            |r| {
                r.labels.insert("ticket".into(), "x".repeat(257));
            },
            &["labels[ticket]"],
        ),
        (|r| r.access_scope = 1, &["access_scope"]),
        (|r| r.access_scope = 7, &["access_scope"]),
        (
            |r| r.kind = pb::RequestKind::Access as i32,
            &["access_scope"],
        ),
        (
            |r| r.requester = pb::Requester::AuthorizedAgent as i32,
            &["requester_evidence"],
        ),
        (
            |r| {
                r.requester = pb::Requester::ParentOrGuardian as i32;
                r.requester_evidence = "x".repeat(513);
            },
            &["requester_evidence"],
        ),
        (
            |r| {
                r.kind = 0;
                r.subject_identities[0].r#type = 42;
                r.subject_identities[0].value.clear();
                r.channel.clear();
            },
            &[
                "kind",
                "subject_identities[0].type",
                "subject_identities[0].value",
                "channel",
            ],
        ),
    ];
    for (edit, expected) in cases {
        let mut req = valid();
        edit(&mut req);
        assert_eq!(fields(new_request(req, now())), *expected);
    }
}

#[test]
fn stored_requests_go_out_without_identity_values() {
    use crate::domain::{InstructionState, RequestStatus};
    use crate::wire::instruction::tests::view;

    let mut escalated = view();
    escalated.state = InstructionState::Escalated;
    let summary = RequestSummary {
        id: RequestId::parse("6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6").unwrap(),
        kind: RequestKind::Access,
        jurisdiction: Jurisdiction::Appi,
        status: RequestStatus::InProgress,
        submitted_at: now(),
        received_at: now(),
        closed_at: None,
        channel: "email".into(),
        requester: Requester::ParentOrGuardian,
        verification: Verification::new(VerificationLevel::Reasonable, "").unwrap(),
        labels: Labels::new([("ticket".to_string(), "T-1".to_string())]).unwrap(),
        identity_types: vec![IdentityType::Email, IdentityType::Phone],
        cancel_reason: None,
        submitted_by: None,
        access_scope: Some(AccessScope::Categories),
        requester_evidence: Some("DOC-77".into()),
        lookback_start: None,
        receipt: crate::domain::Receipt {
            confirm_by: Some(now() - TimeDelta::days(1)),
            confirmed_at: None,
            confirmed_by: None,
        },
        respond_by: now() - TimeDelta::seconds(1),
        extension: None,
        denied_unverified: false,
        identities_erased_at: None,
        instructions: vec![escalated],
    };
    let pb = request(&summary, now());
    assert!(pb.overdue && pb.receipt_overdue);
    assert_eq!(pb.access_scope, pb::AccessScope::Categories as i32);
    assert_eq!(pb.requester_evidence, "DOC-77");
    assert_eq!(pb.status, pb::RequestStatus::InProgress as i32);
    assert_eq!(pb.requester, pb::Requester::ParentOrGuardian as i32);
    assert!(pb.needs_attention);
    assert_eq!(
        pb.identity_types,
        [
            pb::IdentityType::Email as i32,
            pb::IdentityType::Phone as i32
        ]
    );
    assert_eq!(pb.labels["ticket"], "T-1");
    assert_eq!((pb.closed_at, pb.cancel_reason.as_str()), (None, ""));
    assert_eq!(pb.instructions.len(), 1);
}

#[test]
fn outbound_identities_keep_type_and_value() {
    let identity = SubjectIdentity::new(IdentityType::Phone, "+1 555 0100").unwrap();
    let pb = identity_pb(&identity);
    assert_eq!(pb.r#type, pb::IdentityType::Phone as i32);
    assert_eq!(pb.value, "+1 555 0100");
}
