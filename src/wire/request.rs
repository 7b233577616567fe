//! Requests: `SubmitRequestRequest` in, `DataSubjectRequest` out.
//!
//! Intake is where callers make the most mistakes, so every field is
//! checked and every problem reported in one answer. The only rules kept
//! here rather than in the domain are those that need the wire or the clock:
//! enum numbers, timestamp validity, and that `submitted_at` is neither in
//! the future nor implausibly old.

use std::collections::HashMap;

use chrono::TimeDelta;

use super::enums::{ProtoEnum, numbers, optional, required};
use super::{conclude, instruction_summary, opt_timestamp, time, timestamp};
use crate::domain::{
    AccessScope, Channel, Extension, IdentityType, Labels, MAX_EVIDENCE_REFERENCE, NewRequest,
    ProcessorId, RequestId, RequestKind, RequestSummary, Requester, Subject, SubjectIdentity,
    Timestamp, Verification, VerificationLevel, Violations, check_len,
};
use crate::pb;

/// Most processors one request may be restricted to.
const MAX_PROCESSOR_IDS: usize = 100;
/// How far ahead of our clock a caller's `submitted_at` may be.
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(5);
/// 2000-01-01T00:00:00Z: no earlier request is plausible.
const EARLIEST_SUBMISSION_SECONDS: i64 = 946_684_800;

/// Checks a `SubmitRequest` input and builds the request to store. `now`
/// is the orchestrator's clock, against which `submitted_at` is judged.
pub fn new_request(
    req: pb::SubmitRequestRequest,
    now: Timestamp,
) -> Result<NewRequest, Violations> {
    let mut v = Violations::new();
    let id = v.take("request_id", RequestId::parse(&req.request_id));
    let kind = v.take("kind", required(req.kind));
    let jurisdiction = v.take("jurisdiction", required(req.jurisdiction));
    let subject = v.take("subject_identities", subject(req.subject_identities));
    let submitted_at = v.take("submitted_at", submitted_at(req.submitted_at, now));
    let channel = v.take("channel", Channel::parse(&req.channel));
    let requester = v.take("requester", required(req.requester));
    let verification = v.take("verification", verification(req.verification));
    let processor_ids = v.take("processor_ids", processor_ids(&req.processor_ids));
    let labels = v.take("labels", Labels::new(req.labels));
    let access_scope = v.take("access_scope", access_scope(req.access_scope, kind));
    let requester_evidence = v.take(
        "requester_evidence",
        requester_evidence(&req.requester_evidence, requester),
    );

    let request = (|| {
        Some(NewRequest {
            id: id?,
            kind: kind?,
            jurisdiction: jurisdiction?,
            subject: subject?,
            submitted_at: submitted_at?,
            channel: channel?,
            requester: requester?,
            verification: verification?,
            processor_ids: processor_ids?,
            labels: labels?,
            access_scope: access_scope?,
            requester_evidence: requester_evidence?,
        })
    })();
    conclude(v, request)
}

/// The subject's identities; paths like `[1].value`.
fn subject(identities: Vec<pb::SubjectIdentity>) -> Result<Subject, Violations> {
    let mut v = Violations::new();
    let parsed: Vec<_> = identities
        .iter()
        .enumerate()
        .filter_map(|(i, pb)| v.take(&format!("[{i}]"), identity(pb)))
        .collect();
    // Count and duplicates are only judged on a complete list; a partial
    // one would report wrong indices.
    if !v.is_empty() {
        return Err(v);
    }
    Subject::new(parsed)
}

pub(super) fn identity(i: &pb::SubjectIdentity) -> Result<SubjectIdentity, Violations> {
    let mut v = Violations::new();
    let kind = v.take("type", required::<IdentityType>(i.r#type));
    // The value is checked even when the type is bad (see the module docs
    // of `convert` on stand-ins).
    let identity = v.take(
        "",
        SubjectIdentity::new(kind.unwrap_or(IdentityType::Other), &i.value),
    );
    conclude(v, identity)
}

fn submitted_at(
    t: Option<prost_types::Timestamp>,
    now: Timestamp,
) -> Result<Option<Timestamp>, Violations> {
    let Some(t) = t else { return Ok(None) };
    let t = time::from_pb(&t)?;
    if t > now + CLOCK_SKEW {
        Err(Violations::one("", "must not be in the future"))
    } else if t.timestamp() < EARLIEST_SUBMISSION_SECONDS {
        Err(Violations::one("", "must not be before 2000-01-01"))
    } else {
        Ok(Some(t))
    }
}

fn verification(v: Option<pb::Verification>) -> Result<Verification, Violations> {
    let Some(pb) = v else {
        return Err(Violations::one("", "is required"));
    };
    let mut v = Violations::new();
    let level = v.take("level", required(pb.level));
    let verification = v.take(
        "",
        Verification::new(level.unwrap_or(VerificationLevel::None), &pb.method),
    );
    conclude(v, verification)
}

/// Required for ACCESS requests (what they ask to know decides the
/// verification they need), unset for the others. Not judged while the
/// kind is unknown.
fn access_scope(n: i32, kind: Option<RequestKind>) -> Result<Option<AccessScope>, Violations> {
    let scope = optional::<AccessScope>(n)?;
    match (kind, scope) {
        (Some(RequestKind::Access), None) => Err(Violations::one(
            "",
            "is required for ACCESS requests: CATEGORIES or SPECIFIC_PIECES",
        )),
        (Some(k), Some(_)) if k != RequestKind::Access => {
            Err(Violations::one("", "is only for ACCESS requests"))
        }
        (_, scope) => Ok(scope),
    }
}

/// The reference to an agent's or parent's evidence of permission:
/// required when the requester acts for someone else, 1 to
/// [`MAX_EVIDENCE_REFERENCE`] characters without control characters.
fn requester_evidence(
    reference: &str,
    requester: Option<Requester>,
) -> Result<Option<String>, Violations> {
    if reference.is_empty() {
        return match requester {
            Some(r) if r.acts_for_another() => Err(Violations::one(
                "",
                format!(
                    "is required when the requester is {}: a reference to the evidence of their permission",
                    r.proto_name()
                ),
            )),
            _ => Ok(None),
        };
    }
    check_len(reference, 1, MAX_EVIDENCE_REFERENCE)?;
    if reference.chars().any(char::is_control) || reference.trim().is_empty() {
        return Err(Violations::one(
            "",
            "must be a document reference without control characters",
        ));
    }
    Ok(Some(reference.to_string()))
}

/// Parsed, sorted and de-duplicated; paths like `[3]`.
fn processor_ids(ids: &[String]) -> Result<Vec<ProcessorId>, Violations> {
    if ids.len() > MAX_PROCESSOR_IDS {
        return Err(Violations::one(
            "",
            format!("at most {MAX_PROCESSOR_IDS} processor ids"),
        ));
    }
    // The caller's order is kept, so that later findings about an id
    // (unknown, disabled, ...) can name the caller's index.
    let mut v = Violations::new();
    let mut parsed: Vec<ProcessorId> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if let Some(id) = v.take(&format!("[{i}]"), ProcessorId::parse(id)) {
            if parsed.contains(&id) {
                v.add(format!("[{i}]"), "duplicate processor id");
            }
            parsed.push(id);
        }
    }
    v.finish(|| parsed)
}

/// The wire form of an identity (only ever sent to the processor that
/// accepts its type).
pub fn identity_pb(i: &SubjectIdentity) -> pb::SubjectIdentity {
    pb::SubjectIdentity {
        r#type: i.kind.number(),
        value: i.value.clone(),
    }
}

/// The wire form of a stored request, with one line per instruction;
/// `now` decides whether it is overdue.
pub fn request(r: &RequestSummary, now: Timestamp) -> pb::DataSubjectRequest {
    pb::DataSubjectRequest {
        request_id: r.id.to_string(),
        kind: r.kind.number(),
        jurisdiction: r.jurisdiction.number(),
        status: r.status.number(),
        needs_attention: r.needs_attention(now),
        submitted_at: Some(timestamp(r.submitted_at)),
        received_at: Some(timestamp(r.received_at)),
        closed_at: opt_timestamp(r.closed_at),
        channel: r.channel.clone(),
        requester: r.requester.number(),
        verification: Some(verification_pb(&r.verification)),
        labels: labels_pb(&r.labels),
        identity_types: numbers(&r.identity_types),
        instructions: r.instructions.iter().map(instruction_summary).collect(),
        cancel_reason: r.cancel_reason.clone().unwrap_or_default(),
        submitted_by: r
            .submitted_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        access_scope: r.access_scope.map_or(0, ProtoEnum::number),
        requester_evidence: r.requester_evidence.clone().unwrap_or_default(),
        receipt_confirm_by: opt_timestamp(r.receipt.confirm_by),
        receipt_confirmed_at: opt_timestamp(r.receipt.confirmed_at),
        receipt_confirmed_by: r.receipt.confirmed_by.clone().unwrap_or_default(),
        respond_by: Some(timestamp(r.respond_by)),
        extension: r.extension.as_ref().map(extension_pb),
        overdue: r.overdue(now),
        receipt_overdue: r.receipt_overdue(now),
        identities_erased_at: opt_timestamp(r.identities_erased_at),
    }
}

/// The wire form of a deadline extension.
pub fn extension_pb(e: &Extension) -> pb::DeadlineExtension {
    pb::DeadlineExtension {
        original_deadline: Some(timestamp(e.original_deadline)),
        new_deadline: Some(timestamp(e.new_deadline)),
        reason: e.reason.clone(),
        declared_by: e.declared_by.clone(),
        declared_at: Some(timestamp(e.declared_at)),
    }
}

/// The wire form of a verification.
pub(super) fn verification_pb(v: &Verification) -> pb::Verification {
    pb::Verification {
        level: v.level.number(),
        method: v.method.clone(),
    }
}

fn labels_pb(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
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
}
