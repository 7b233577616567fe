//! The compliance clock's messages: the catalogue of exception grounds,
//! `ListExceptions`' filters, and what `VerifyAuditTrail` found.

use super::conclude;
use super::enums::{ProtoEnum, numbers, optional};
use crate::domain::Violations;
use crate::domain::exceptions::Ground;
use crate::domain::{Jurisdiction, RequestKind};
use crate::pb;
use crate::store::TrailCheck;

/// The wire form of one ground of the catalogue.
pub fn exception_ground(g: &Ground) -> pb::ExceptionGround {
    pb::ExceptionGround {
        code: g.code.number(),
        jurisdiction: g.jurisdiction.map_or(0, ProtoEnum::number),
        provision: g.provision.to_string(),
        title: g.title.to_string(),
        description: g.description.to_string(),
        kinds: numbers(g.kinds),
    }
}

/// `ListExceptions`' filters: zero means any.
pub fn list_filters(
    req: &pb::ListExceptionsRequest,
) -> Result<(Option<Jurisdiction>, Option<RequestKind>), Violations> {
    let mut v = Violations::new();
    let jurisdiction = v.take("jurisdiction", optional(req.jurisdiction));
    let kind = v.take("kind", optional(req.kind));
    conclude(v, jurisdiction.zip(kind))
}

/// The wire form of an audit-trail check.
pub fn trail_check(request_id: &str, c: &TrailCheck) -> pb::AuditTrailVerification {
    pb::AuditTrailVerification {
        request_id: request_id.to_string(),
        intact: c.first_break.is_none(),
        events: c.events,
        head: c.head.clone(),
        first_break: c
            .first_break
            .as_ref()
            .map(|(sequence, problem)| pb::AuditBreak {
                sequence: *sequence,
                problem: problem.clone(),
            }),
        record_checked: c.record_checked,
    }
}
