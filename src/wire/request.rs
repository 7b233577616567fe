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
    let lookback_start = v
        .take(
            "",
            super::parse_timestamp(req.lookback_start, "lookback_start"),
        )
        .flatten();
    if let (Some(kind), Some(jurisdiction), Some(at)) = (kind, jurisdiction, submitted_at) {
        let made = at.unwrap_or(now);
        v.take(
            "lookback_start",
            crate::domain::lookback::check(kind, jurisdiction, made, lookback_start),
        );
    }

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
            lookback_start,
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
        .filter_map(|(i, pb)| v.take(&format!("[{i}]"), submitted_identity(pb)))
        .collect();
    // Count and duplicates are only judged on a complete list; a partial
    // one would report wrong indices.
    if !v.is_empty() {
        return Err(v);
    }
    Subject::new(parsed)
}

/// An identity of a new submission: [`identity`], in its type's shape.
fn submitted_identity(i: &pb::SubjectIdentity) -> Result<SubjectIdentity, Violations> {
    let identity = identity(i)?;
    identity.check_shape()?;
    Ok(identity)
}

/// An identity as given: its type and a value within the length rules.
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
    if reference.chars().any(crate::domain::hidden) || reference.trim().is_empty() {
        return Err(Violations::one(
            "",
            "must be a document reference without control characters or bidirectional overrides",
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
        lookback_start: opt_timestamp(r.lookback_start),
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
#[path = "request_tests.rs"]
mod tests;
