//! What a processor answers: the outcome of an instruction, with the details
//! the completion record must carry (the legal basis of a denial, the reason
//! of a failure, the sub-processors told in turn, and for access requests the
//! data found).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::country::{COUNTRY_RULE, is_country_code};
use super::violation::{check_line, check_text};
use super::{
    DataRecord, DeletionException, Disclosures, InstructionState, Violations, check_records,
};

/// Most sub-processors one result may list.
pub const MAX_SUB_PROCESSORS: usize = 100;
/// Most data records one result may carry.
pub const MAX_DATA_RECORDS: usize = 10_000;
/// Most bytes of data records (categories, values, sources) one result may
/// carry: with the rest of its message, it fits the transport's smallest
/// message limit (1 MiB; 4 MiB by default).
pub const MAX_DATA_RECORD_BYTES: usize = 768 * 1024;

/// A processor's final answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Carried out.
    #[serde(rename = "COMPLETED")]
    Completed,
    /// Nothing held about the subject.
    #[serde(rename = "NO_DATA")]
    NoData,
    /// Refused under an exception.
    #[serde(rename = "DENIED")]
    Denied,
    /// Could not be done.
    #[serde(rename = "FAILED")]
    Failed,
}

impl Outcome {
    /// The terminal instruction state it leads to.
    pub fn state(self) -> InstructionState {
        match self {
            Self::Completed => InstructionState::Completed,
            Self::NoData => InstructionState::NoData,
            Self::Denied => InstructionState::Denied,
            Self::Failed => InstructionState::Failed,
        }
    }
}

/// A company a processor passed the instruction on to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubProcessor {
    /// Name, 1 to 200 characters.
    pub name: String,
    /// ISO 3166-1 alpha-2, or empty.
    pub country: String,
}

/// A validated result: denials carry their legal basis, failures a reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionResult {
    /// The outcome.
    pub outcome: Outcome,
    /// Legal ground, present exactly for denials.
    pub exception: Option<DeletionException>,
    /// What is kept and why (denials).
    pub explanation: String,
    /// Why it failed (failures).
    pub reason: String,
    /// Sub-processors told in turn.
    pub sub_processors: Vec<SubProcessor>,
    /// Data found (access-type requests).
    pub records: Vec<DataRecord>,
    /// What a categories-only federated answer carries in place of
    /// records: the downstream report's disclosures (see
    /// `dispatch::federation_data`). Sealed apart like the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Box<Disclosures>>,
}

impl InstructionResult {
    /// Checks the rules that make a result usable as proof.
    pub fn new(
        outcome: Outcome,
        exception: Option<DeletionException>,
        explanation: &str,
        reason: &str,
        sub_processors: Vec<SubProcessor>,
        records: Vec<DataRecord>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        v.take("explanation", check_text(explanation, 0, 2000));
        v.take("reason", check_text(reason, 0, 2000));
        match outcome {
            Outcome::Denied => {
                if exception.is_none() {
                    v.add("exception", "is required when the outcome is DENIED");
                }
                if explanation.trim().is_empty() {
                    v.add("explanation", "is required when the outcome is DENIED");
                }
            }
            _ if exception.is_some() => {
                v.add("exception", "is only allowed when the outcome is DENIED");
            }
            _ => {}
        }
        if outcome == Outcome::Failed && reason.trim().is_empty() {
            v.add("reason", "is required when the outcome is FAILED");
        }
        if !records.is_empty() && outcome != Outcome::Completed {
            v.add("records", "are only allowed when the outcome is COMPLETED");
        }
        if sub_processors.len() > MAX_SUB_PROCESSORS {
            v.add(
                "sub_processors",
                format!("at most {MAX_SUB_PROCESSORS} entries"),
            );
        }
        for (i, s) in sub_processors.iter().enumerate() {
            v.take(
                &format!("sub_processors[{i}].name"),
                check_line(&s.name, 1, 200),
            );
            if !(s.country.is_empty() || is_country_code(&s.country)) {
                v.add(
                    format!("sub_processors[{i}].country"),
                    format!("{COUNTRY_RULE}, or empty"),
                );
            }
        }
        if records.len() > MAX_DATA_RECORDS {
            v.add("records", format!("at most {MAX_DATA_RECORDS} entries"));
        }
        check_records(&records, &mut v);
        v.finish(|| Self {
            outcome,
            exception,
            explanation: explanation.to_string(),
            reason: reason.to_string(),
            sub_processors,
            records,
            carried: None,
        })
    }

    /// A plain result with no details.
    pub fn simple(outcome: Outcome) -> Result<Self, Violations> {
        Self::new(outcome, None, "", "", vec![], vec![])
    }

    /// The result with the values of `sent` (the identities the processor
    /// was given) removed from its texts: explanation, reason and
    /// sub-processors' names (see [`super::redact_identities`]). Data
    /// records of an access request are the answer itself and stay.
    pub fn redacted(mut self, sent: &[super::SubjectIdentity]) -> Self {
        self.explanation = super::redact_identities(&self.explanation, sent);
        self.reason = super::redact_identities(&self.reason, sent);
        for s in &mut self.sub_processors {
            s.name = super::redact_identities(&s.name, sent);
        }
        self
    }

    /// Why this denial's ground cannot deny a request of `jurisdiction`
    /// and `kind` (see [`super::exceptions::misapplied`]), if it cannot.
    pub fn misapplied_ground(
        &self,
        jurisdiction: super::Jurisdiction,
        kind: super::RequestKind,
    ) -> Option<String> {
        match (self.outcome, self.exception) {
            (Outcome::Denied, Some(code)) => {
                super::exceptions::misapplied(code, jurisdiction, kind)
            }
            _ => None,
        }
    }

    /// Whether `other` is the same answer (idempotent repeat of a callback).
    pub fn same_answer(&self, other: &InstructionResult) -> bool {
        self == other
    }

    /// The result without its data records, and the records (kept apart:
    /// they are personal data, sealed at rest and erased once the request
    /// is done).
    pub fn split_records(mut self) -> (Self, Vec<DataRecord>) {
        let records = std::mem::take(&mut self.records);
        (self, records)
    }
}

/// Who recorded a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolvedBy {
    /// The processor itself (callback or immediate answer).
    #[serde(rename = "processor")]
    Processor,
    /// An operator on the processor's behalf, with their note.
    #[serde(rename = "operator")]
    Operator(String),
    /// The orchestrator (cancellation).
    #[serde(rename = "system")]
    System,
}

impl fmt::Display for ResolvedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Processor => f.write_str("processor"),
            Self::Operator(note) => write!(f, "operator: {note}"),
            Self::System => f.write_str("system"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_needs_basis() {
        let e = InstructionResult::new(Outcome::Denied, None, "", "", vec![], vec![]).unwrap_err();
        let fields: Vec<_> = e.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["exception", "explanation"]);
        assert!(
            InstructionResult::new(
                Outcome::Denied,
                Some(DeletionException::CcpaLegalObligation),
                "tax records kept 7 years",
                "",
                vec![],
                vec![]
            )
            .is_ok()
        );
    }

    #[test]
    fn failure_needs_reason_and_exceptions_only_with_denials() {
        assert!(InstructionResult::simple(Outcome::Failed).is_err());
        assert!(
            InstructionResult::new(
                Outcome::Completed,
                Some(DeletionException::Other),
                "",
                "",
                vec![],
                vec![]
            )
            .is_err()
        );
    }
}
