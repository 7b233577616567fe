//! The completion record: the proof, kept for the record period (CCPA regs
//! 7101), of what was instructed to whom, when, and what came back. It is
//! written once, in the same transaction as the last instruction's outcome,
//! and never changed. It carries no subject identifiers, so it can outlive
//! the purge of the request's personal data.
//!
//! The record is stored as its canonical JSON (fields in declaration order,
//! maps sorted, timestamps RFC 3339 UTC) together with the SHA-256 of those
//! bytes; anyone holding the bytes can recompute the digest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    AccessScope, DeletionException, Extension, InstructionId, InstructionState, Jurisdiction,
    ProcessorId, RequestId, RequestKind, Requester, SubProcessor, Timestamp, Verification,
};

/// The nature of the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverallOutcome {
    /// Every processor completed or held no data (or none matched).
    #[serde(rename = "FULFILLED")]
    Fulfilled,
    /// Some fulfilled, some denied or failed.
    #[serde(rename = "PARTIALLY_FULFILLED")]
    PartiallyFulfilled,
    /// None fulfilled.
    #[serde(rename = "NOT_FULFILLED")]
    NotFulfilled,
    /// Cancelled.
    #[serde(rename = "CANCELLED")]
    Cancelled,
    /// Denied at intake: verified below the jurisdiction's minimum.
    #[serde(rename = "DENIED_UNVERIFIED")]
    DeniedUnverified,
}

impl OverallOutcome {
    /// Stable name (records, metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfilled => "FULFILLED",
            Self::PartiallyFulfilled => "PARTIALLY_FULFILLED",
            Self::NotFulfilled => "NOT_FULFILLED",
            Self::Cancelled => "CANCELLED",
            Self::DeniedUnverified => "DENIED_UNVERIFIED",
        }
    }

    /// Derives the overall outcome from the final instruction states.
    pub fn from_states(cancelled: bool, states: &[InstructionState]) -> Self {
        if cancelled {
            return Self::Cancelled;
        }
        let fulfilled = states
            .iter()
            .filter(|s| matches!(s, InstructionState::Completed | InstructionState::NoData))
            .count();
        if fulfilled == states.len() {
            Self::Fulfilled
        } else if fulfilled == 0 {
            Self::NotFulfilled
        } else {
            Self::PartiallyFulfilled
        }
    }
}

/// What one processor was told and answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorLine {
    /// Processor.
    pub processor_id: ProcessorId,
    /// Its name at the time.
    pub display_name: String,
    /// Its role.
    pub role: String,
    /// Its country (the destination of the transfer).
    pub country: String,
    /// The instruction.
    pub instruction_id: InstructionId,
    /// First delivery.
    pub first_instructed_at: Option<Timestamp>,
    /// Acknowledgement.
    pub acknowledged_at: Option<Timestamp>,
    /// Final answer.
    pub resolved_at: Option<Timestamp>,
    /// Delivery attempts.
    pub attempts: u32,
    /// Final state.
    pub state: InstructionState,
    /// Legal ground of a denial.
    pub exception: Option<DeletionException>,
    /// Explanation of a denial.
    pub explanation: String,
    /// Reason of a failure.
    pub reason: String,
    /// Sub-processors told in turn.
    pub sub_processors: Vec<SubProcessor>,
    /// Who recorded the answer.
    pub resolved_by: String,
    /// How many data records came back (not the records themselves).
    pub data_records: u32,
}

/// The immutable record of one finished request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionRecord {
    /// Request.
    pub request_id: RequestId,
    /// Nature of the request.
    pub kind: RequestKind,
    /// Regime.
    pub jurisdiction: Jurisdiction,
    /// Date of the request.
    pub submitted_at: Timestamp,
    /// When it was taken in.
    pub received_at: Timestamp,
    /// Manner in which it was made.
    pub channel: String,
    /// Who made it.
    pub requester: Requester,
    /// Verification reached.
    pub verification: Verification,
    /// Date of the response.
    pub responded_at: Timestamp,
    /// Nature of the response.
    pub outcome: OverallOutcome,
    /// One line per processor, by processor id.
    pub lines: Vec<ProcessorLine>,
    /// Basis of each denial: "processor: EXCEPTION: explanation".
    pub denial_basis: Vec<String>,
    /// Cancellation reason or other note.
    pub note: String,
    /// The response deadline in force when it closed (absent from records
    /// written before deadlines were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond_by: Option<Timestamp>,
    /// The extension, if one was declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Extension>,
    /// When receipt was confirmed to the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_confirmed_at: Option<Timestamp>,
    /// Whether the response came by `respond_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_time: Option<bool>,
    /// What an access request asked to know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_scope: Option<AccessScope>,
    /// The hash of the request's last event: the digest covers its audit
    /// trail (empty in records written before the trail was chained).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audit_head: String,
    /// The SHA-256 (lower-case hex) of the request's portable export, the
    /// JSON document `ExportAccessData` streams (see
    /// [`super::export`]): set on finished access requests that asked for
    /// the specific pieces, and on portability requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_sha256: Option<String>,
}

/// The facts of a request a record restates, as its closing update
/// returned them.
#[derive(Clone, Debug)]
pub struct RecordFacts {
    /// Request.
    pub request_id: RequestId,
    /// Nature of the request.
    pub kind: RequestKind,
    /// Regime.
    pub jurisdiction: Jurisdiction,
    /// Date of the request.
    pub submitted_at: Timestamp,
    /// When it was taken in.
    pub received_at: Timestamp,
    /// Manner in which it was made.
    pub channel: String,
    /// Who made it.
    pub requester: Requester,
    /// Verification reached.
    pub verification: Verification,
    /// What an access request asked to know.
    pub access_scope: Option<AccessScope>,
    /// The deadline in force.
    pub respond_by: Timestamp,
    /// The extension, if any.
    pub extension: Option<Extension>,
    /// When receipt was confirmed.
    pub receipt_confirmed_at: Option<Timestamp>,
    /// The cancellation reason, when cancelled.
    pub cancel_reason: Option<String>,
    /// Denied at intake for lack of verification.
    pub denied_unverified: bool,
}

impl CompletionRecord {
    /// Fills in the derived parts (outcome, sorted lines, denial basis,
    /// timeliness); the audit head is set by whoever chains the request's
    /// last event.
    pub fn assemble(
        facts: RecordFacts,
        responded_at: Timestamp,
        mut lines: Vec<ProcessorLine>,
    ) -> Self {
        let RecordFacts {
            request_id,
            kind,
            jurisdiction,
            submitted_at,
            received_at,
            channel,
            requester,
            verification,
            access_scope,
            respond_by,
            extension,
            receipt_confirmed_at,
            cancel_reason,
            denied_unverified,
        } = facts;
        lines.sort_by(|a, b| a.processor_id.cmp(&b.processor_id));
        let states: Vec<_> = lines.iter().map(|l| l.state).collect();
        let outcome = if denied_unverified {
            OverallOutcome::DeniedUnverified
        } else {
            OverallOutcome::from_states(cancel_reason.is_some(), &states)
        };
        let denial_basis = lines
            .iter()
            .filter(|l| l.state == InstructionState::Denied)
            .map(|l| {
                let exception = l.exception.map_or("UNSPECIFIED", |e| e.as_str());
                format!("{}: {exception}: {}", l.processor_id, l.explanation)
            })
            .collect();
        let note = match (cancel_reason, lines.is_empty()) {
            (Some(reason), _) => format!("cancelled: {reason}"),
            (None, true) if denied_unverified => format!(
                "denied without fan-out: verified {} where {jurisdiction} requires more for this request",
                verification.level
            ),
            (None, true) => "no processor matched this request's kind and identity types".into(),
            (None, false) => String::new(),
        };
        Self {
            request_id,
            kind,
            jurisdiction,
            submitted_at,
            received_at,
            channel,
            requester,
            verification,
            responded_at,
            outcome,
            lines,
            denial_basis,
            note,
            respond_by: Some(respond_by),
            extension,
            receipt_confirmed_at,
            on_time: Some(responded_at <= respond_by),
            access_scope,
            audit_head: String::new(),
            export_sha256: None,
        }
    }

    /// The canonical encoding: compact JSON with fields in declaration order.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Lower-case hex SHA-256 of `bytes`.
    pub fn digest_of(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstructionState as S;

    #[test]
    fn overall_outcome() {
        use OverallOutcome as O;
        assert_eq!(O::from_states(false, &[]), O::Fulfilled);
        assert_eq!(
            O::from_states(false, &[S::Completed, S::NoData]),
            O::Fulfilled
        );
        assert_eq!(
            O::from_states(false, &[S::Completed, S::Denied]),
            O::PartiallyFulfilled
        );
        assert_eq!(
            O::from_states(false, &[S::Failed, S::Denied]),
            O::NotFulfilled
        );
        assert_eq!(O::from_states(true, &[S::Completed]), O::Cancelled);
    }
}
