//! A data-subject request as taken in: who it is about (see the
//! `subject` module), what they asked for, under which regime, how it was
//! made and verified. Nothing in this module is ever logged whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::violation::check_len;
use super::{
    AccessScope, Extension, IdentityType, InstructionState, Jurisdiction, ProcessorId, RequestId,
    RequestKind, Requester, Subject, Timestamp, Verification, Violations,
};

/// Most labels one request may carry.
pub const MAX_LABELS: usize = 32;

/// How a request was made: a short machine token such as `web_form`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    /// 1 to 64 characters of `[a-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, Violations> {
        check_len(s, 1, 64)?;
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(Violations::one("", "must be characters of [a-z0-9_-]"));
        }
        Ok(Self(s.to_string()))
    }
    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label key as a violation names it: a key too long to be valid is cut
/// to its first 63 characters and marked, so that an error never carries
/// more than the caller needs to find the key.
fn shown_key(key: &str) -> String {
    match key.char_indices().nth(63) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key.to_string(),
    }
}

/// Caller labels, sorted by key (so the encoding is canonical).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// At most [`MAX_LABELS`]; keys 1 to 63 of `[a-z0-9_.-]`; values at most 256.
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Result<Self, Violations> {
        let map: BTreeMap<_, _> = map.into_iter().collect();
        let mut v = Violations::new();
        if map.len() > MAX_LABELS {
            v.add("", format!("at most {MAX_LABELS} labels"));
        }
        for (k, val) in &map {
            let key_ok = (1..=63).contains(&k.len())
                && k.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
                });
            if !key_ok {
                v.add(
                    format!("[{}]", shown_key(k)),
                    "label keys must be 1 to 63 characters of [a-z0-9_.-]",
                );
            }
            if val.chars().count() > 256 {
                v.add(
                    format!("[{}]", shown_key(k)),
                    "label values must be at most 256 characters",
                );
            } else if val.chars().any(super::violation::hidden) {
                v.add(
                    format!("[{}]", shown_key(k)),
                    "label values must not contain control characters or bidirectional overrides",
                );
            }
        }
        v.finish(|| Self(map))
    }
    /// The labels.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

/// A validated request as submitted, before it is stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewRequest {
    /// Idempotency key.
    pub id: RequestId,
    /// Nature of the request.
    pub kind: RequestKind,
    /// Regime.
    pub jurisdiction: Jurisdiction,
    /// Who it is about.
    pub subject: Subject,
    /// When the person made it; `None` means "when it is received".
    pub submitted_at: Option<Timestamp>,
    /// Manner in which it was made.
    pub channel: Channel,
    /// Who made it.
    pub requester: Requester,
    /// Verification reached.
    pub verification: Verification,
    /// Restriction of the fan-out, in the caller's order, without
    /// duplicates; empty: every processor that can take the request.
    pub processor_ids: Vec<ProcessorId>,
    /// Caller labels.
    pub labels: Labels,
    /// What an access request asks to know (`None` for other kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_scope: Option<AccessScope>,
    /// An agent's or parent's evidence of permission: a reference to a
    /// document in the caller's system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester_evidence: Option<String>,
    /// How far back an access or portability request reaches, as asked
    /// (see [`super::lookback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback_start: Option<Timestamp>,
}

/// What the law and the business's policy make of a submission, decided
/// before it is taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Its deadlines, from the jurisdiction's clock.
    pub deadlines: super::Deadlines,
    /// Whether its verification meets the jurisdiction's minimum for it. A
    /// request that does not is closed at intake, without fan-out, with a
    /// record saying it was denied for lack of verification.
    pub verified: bool,
}

/// Longest reference to an agent's or parent's evidence.
pub const MAX_EVIDENCE_REFERENCE: usize = 512;

impl Requester {
    /// Whether this requester acts for someone else, and so must show
    /// their permission.
    pub fn acts_for_another(self) -> bool {
        matches!(
            self,
            Requester::AuthorizedAgent | Requester::ParentOrGuardian
        )
    }
}

impl NewRequest {
    /// SHA-256 over the canonical JSON of the content, used to tell an
    /// idempotent retry (same fingerprint) from a conflicting reuse of the id.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("request serialises");
        hex::encode(Sha256::digest(json))
    }
}

/// The lifecycle of a request. Serialised by its stable upper-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    /// Taken in with its instructions; nothing delivered yet. Entered at
    /// intake; left when a dispatcher or puller first claims an instruction
    /// (to `InProgress`), when the last instruction becomes terminal (to
    /// `Completed`), or on cancel.
    Received,
    /// At least one instruction has gone out. Left by aggregation (to
    /// `Completed`) or cancel.
    InProgress,
    /// Terminal: every instruction is terminal and the record is written, in
    /// the same transaction as the last instruction's outcome.
    Completed,
    /// Terminal: cancelled by a caller; the record is written.
    Cancelled,
}

impl RequestStatus {
    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "RECEIVED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
        }
    }
    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Received,
            Self::InProgress,
            Self::Completed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The receipt confirmation owed to the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// When it must be confirmed, if the law says.
    pub confirm_by: Option<Timestamp>,
    /// When it was confirmed.
    pub confirmed_at: Option<Timestamp>,
    /// Who confirmed it.
    pub confirmed_by: Option<String>,
}

/// A stored request as reported to callers, with its instruction lines.
/// Carries no identity values, only their types.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSummary {
    /// Id.
    pub id: RequestId,
    /// Kind.
    pub kind: RequestKind,
    /// Regime.
    pub jurisdiction: Jurisdiction,
    /// Status.
    pub status: RequestStatus,
    /// When the person made it.
    pub submitted_at: Timestamp,
    /// When it was taken in.
    pub received_at: Timestamp,
    /// When it became terminal.
    pub closed_at: Option<Timestamp>,
    /// Manner.
    pub channel: String,
    /// Who made it.
    pub requester: Requester,
    /// Verification.
    pub verification: Verification,
    /// Labels.
    pub labels: Labels,
    /// Identity types it was submitted with.
    pub identity_types: Vec<IdentityType>,
    /// Cancellation reason.
    pub cancel_reason: Option<String>,
    /// Who submitted it (`None` for requests taken in before submissions
    /// were attributed).
    pub submitted_by: Option<super::Actor>,
    /// What an access request asks to know.
    pub access_scope: Option<AccessScope>,
    /// The reference to an agent's or parent's evidence.
    pub requester_evidence: Option<String>,
    /// How far back it reaches (in force, see [`super::lookback`]).
    pub lookback_start: Option<Timestamp>,
    /// The receipt confirmation.
    pub receipt: Receipt,
    /// The response deadline in force (extended or not).
    pub respond_by: Timestamp,
    /// The extension, if one was declared.
    pub extension: Option<Extension>,
    /// Whether it was denied at intake for lack of verification.
    pub denied_unverified: bool,
    /// When its identities, payloads and returned data were erased.
    pub identities_erased_at: Option<Timestamp>,
    /// One line per instruction, by processor id.
    pub instructions: Vec<super::InstructionView>,
}

impl RequestSummary {
    /// True while an instruction waits for an operator, or receipt is
    /// overdue for confirmation.
    pub fn needs_attention(&self, now: Timestamp) -> bool {
        self.instructions
            .iter()
            .any(|i| i.state == InstructionState::Escalated)
            || self.receipt_overdue(now)
    }

    /// True while the request is open past its response deadline.
    pub fn overdue(&self, now: Timestamp) -> bool {
        !self.status.is_terminal() && now > self.respond_by
    }

    /// True while the request is open and its receipt unconfirmed past
    /// its deadline. (A closed request's answer has gone out; whether its
    /// receipt was confirmed in time is in its record.)
    pub fn receipt_overdue(&self, now: Timestamp) -> bool {
        match (self.receipt.confirm_by, self.receipt.confirmed_at) {
            (Some(by), None) => now > by && self.closed_at.is_none(),
            _ => false,
        }
    }
}
