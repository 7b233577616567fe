//! `DataProtectionService`'s messages: the identities checked against, or
//! removed from, the suppression list, and what a resealing pass did.

use super::conclude;
use crate::domain::{SubjectIdentity, Timestamp, Violations};
use crate::pb;
use crate::store::Resealed;

/// Most identities one check or removal takes.
pub const MAX_CHECKED: usize = 100;

/// The identities of a check or a removal, 1 to [`MAX_CHECKED`]; paths
/// like `identities[1].value`.
pub fn checked_identities(
    list: &[pb::SubjectIdentity],
) -> Result<Vec<SubjectIdentity>, Violations> {
    if list.is_empty() || list.len() > MAX_CHECKED {
        return Err(Violations::one(
            "identities",
            format!("must hold 1 to {MAX_CHECKED} identities"),
        ));
    }
    let mut v = Violations::new();
    let parsed: Vec<_> = list
        .iter()
        .enumerate()
        .filter_map(|(i, pb)| v.take(&format!("identities[{i}]"), super::request::identity(pb)))
        .collect();
    conclude(v, Some(parsed))
}

/// A removal from the suppression list: its identities (as
/// [`checked_identities`]) and a reason of 1 to 2,000 characters, kept in
/// the audit trail.
pub fn suppression_removal(
    req: &pb::RemoveSuppressionRequest,
) -> Result<Vec<SubjectIdentity>, Violations> {
    let mut v = Violations::new();
    let identities = v.take("", checked_identities(&req.identities));
    super::check_reason(&mut v, "reason", &req.reason);
    conclude(v, identities)
}

/// How many values a resealing pass takes per batch: `batch_size`, 500
/// when unset, at most 10,000.
pub fn reseal_batch(batch_size: u32) -> Result<u32, Violations> {
    match batch_size {
        0 => Ok(500),
        n @ 1..=10_000 => Ok(n),
        _ => Err(Violations::one("batch_size", "must be between 1 and 10000")),
    }
}

/// The answer of a check.
pub fn suppression_statuses(found: &[Option<Timestamp>]) -> pb::CheckSuppressionResponse {
    pb::CheckSuppressionResponse {
        results: found
            .iter()
            .enumerate()
            .map(|(index, since)| pb::SuppressionStatus {
                index: index as u32,
                suppressed: since.is_some(),
                since: since.map(super::timestamp),
            })
            .collect(),
    }
}

/// The answer of a resealing pass.
pub fn resealed(active: &str, r: &Resealed) -> pb::ResealDataResponse {
    pb::ResealDataResponse {
        active_key: active.to_string(),
        resealed: r.values,
        fingerprints_keyed: r.fingerprints,
        unreadable: r
            .unreadable
            .iter()
            .map(|(key_id, values)| pb::UnreadableKey {
                key_id: key_id.clone(),
                values: *values,
            })
            .collect(),
    }
}
