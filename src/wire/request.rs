//! Requests: `SubmitRequestRequest` in, `DataSubjectRequest` out.
//!
//! Intake is where callers make the most mistakes, so every field is
//! checked and every problem reported in one answer. The only rules kept
//! here rather than in the domain are those that need the wire or the clock:
//! enum numbers, timestamp validity, and that `submitted_at` is neither in
//! the future nor implausibly old.

use std::collections::HashMap;

use chrono::TimeDelta;

use super::enums::{ProtoEnum, numbers, required};
use super::{conclude, instruction_summary, opt_timestamp, time, timestamp};
use crate::domain::{
    Channel, IdentityType, Labels, NewRequest, ProcessorId, RequestId, RequestSummary, Subject,
    SubjectIdentity, Timestamp, Verification, VerificationLevel, Violations,
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

fn identity(i: &pb::SubjectIdentity) -> Result<SubjectIdentity, Violations> {
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

/// The wire form of a stored request, with one line per instruction.
pub fn request(r: &RequestSummary) -> pb::DataSubjectRequest {
    pb::DataSubjectRequest {
        request_id: r.id.to_string(),
        kind: r.kind.number(),
        jurisdiction: r.jurisdiction.number(),
        status: r.status.number(),
        needs_attention: r.needs_attention(),
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
            instructions: vec![escalated],
        };
        let pb = request(&summary);
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
