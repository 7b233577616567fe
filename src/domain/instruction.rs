//! The instruction lifecycle: one instruction tells one processor to act on
//! one request. This is a pure state machine; the store turns
//! [`InstructionState::sources`] into `WHERE state IN (...)` guards, so a
//! transition that is illegal here cannot happen in the database either, even
//! when replicas race.
//!
//! ```text
//!            claim              accepted            outcome
//! PENDING ----------> DELIVERING --------> ACKNOWLEDGED ------> COMPLETED | NO_DATA
//!    ^  ^  retry later /   |  \ outcome          |  reminder due         | DENIED | FAILED
//!    |  +--------------+   |   +-----------------|---------------------> |
//!    |   lease expired     | escalate            | reminders exhausted   |
//!    +---------------------+----> ESCALATED <----+                       |
//!                rearm (operator)     | resolve (operator) ------------> +
//!  any non-terminal state --cancel--> CANCELLED
//! ```

use serde::{Deserialize, Serialize};

use super::{
    InstructionId, InstructionResult, Jurisdiction, Outcome, ProcessorId, RequestId, RequestKind,
    ResolvedBy, Timestamp,
};

/// Where an instruction is in its lifecycle. Serialised by its stable
/// upper-case name (the same as [`InstructionState::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstructionState {
    /// Waiting for its next attempt. Entered at intake, after a retryable
    /// failure (with `next_attempt_at` written), when a lease expires, and on
    /// an operator's re-arm. Left when a dispatcher claims it (push), a
    /// processor pulls it (pull) or an operator resolves it (manual).
    Pending,
    /// Leased (`lease_expires_at`) by one dispatcher or one pulling
    /// processor. Left by the delivery's answer, or — when the lease expires
    /// with no answer — back to `Pending` (and at once re-claimed).
    Delivering,
    /// The processor accepted the instruction; its outcome is due by
    /// `reply_due_at`. Left by the outcome, or by a reminder (claimed again,
    /// same id) when overdue, or escalated when the reminders run out.
    Acknowledged,
    /// Terminal: carried out.
    Completed,
    /// Terminal: the processor holds nothing about the subject.
    NoData,
    /// Terminal: refused in whole or part under a stated legal exception.
    Denied,
    /// Terminal: could not be carried out.
    Failed,
    /// Terminal: the request was cancelled first.
    Cancelled,
    /// Needs an operator: retries or reminders ran out, or the processor
    /// answered with a non-retryable error. Left by an operator's re-arm (to
    /// `Pending`), resolve (to a terminal state), a late acknowledgement, or
    /// cancel.
    Escalated,
}

/// Something that happens to an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstructionEvent {
    /// A dispatcher or a pulling processor leases it for delivery; from
    /// `Acknowledged` this is a reminder.
    Claim,
    /// The processor accepted it (an `ACCEPTED` answer or
    /// `AcknowledgeInstruction`).
    Acknowledge,
    /// A final outcome arrived, from the processor or an operator.
    Resolve(Outcome),
    /// A delivery failed with a retryable error and budget remains.
    RetryLater,
    /// Retries or reminders ran out, or the error was not retryable.
    Escalate,
    /// The lease ran out with no answer.
    LeaseExpired,
    /// An operator re-arms an escalated instruction.
    Rearm,
    /// The request was cancelled.
    Cancel,
}

/// A legal move from one state to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Before.
    pub from: InstructionState,
    /// After.
    pub to: InstructionState,
}

impl InstructionState {
    /// Every state.
    pub const ALL: [InstructionState; 9] = [
        Self::Pending,
        Self::Delivering,
        Self::Acknowledged,
        Self::Completed,
        Self::NoData,
        Self::Denied,
        Self::Failed,
        Self::Cancelled,
        Self::Escalated,
    ];

    /// Whether the instruction is finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::NoData | Self::Denied | Self::Failed | Self::Cancelled
        )
    }

    /// The state after `event`, or `None` when the event is illegal here.
    pub fn apply(self, event: InstructionEvent) -> Option<InstructionState> {
        use InstructionEvent as E;
        use InstructionState as S;
        if self.is_terminal() {
            return None;
        }
        match (self, event) {
            (S::Pending | S::Acknowledged, E::Claim) => Some(S::Delivering),
            (S::Pending | S::Delivering | S::Escalated, E::Acknowledge) => Some(S::Acknowledged),
            (_, E::Resolve(outcome)) => Some(outcome.state()),
            (S::Delivering, E::RetryLater | E::LeaseExpired) => Some(S::Pending),
            (S::Pending | S::Delivering | S::Acknowledged, E::Escalate) => Some(S::Escalated),
            (S::Escalated, E::Rearm) => Some(S::Pending),
            (_, E::Cancel) => Some(S::Cancelled),
            _ => None,
        }
    }

    /// The transition for `event`, if legal.
    pub fn transition(self, event: InstructionEvent) -> Option<Transition> {
        self.apply(event).map(|to| Transition { from: self, to })
    }

    /// Every state from which `event` is legal: the store's `WHERE state IN`.
    pub fn sources(event: InstructionEvent) -> Vec<InstructionState> {
        Self::ALL
            .into_iter()
            .filter(|s| s.apply(event).is_some())
            .collect()
    }

    /// Stable name (SQL, records, events).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivering => "DELIVERING",
            Self::Acknowledged => "ACKNOWLEDGED",
            Self::Completed => "COMPLETED",
            Self::NoData => "NO_DATA",
            Self::Denied => "DENIED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Escalated => "ESCALATED",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// An instruction as read back from the store. Serialisable without its
/// result (which may hold personal data), fields that are not set left
/// out; the event history keeps a smaller [`super::InstructionSnapshot`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructionView {
    /// Stable id.
    pub id: InstructionId,
    /// Its request.
    pub request_id: RequestId,
    /// Its processor.
    pub processor_id: ProcessorId,
    /// The request's kind.
    pub kind: RequestKind,
    /// The request's regime.
    pub jurisdiction: Jurisdiction,
    /// When the person made the request.
    pub submitted_at: Timestamp,
    /// State.
    pub state: InstructionState,
    /// Delivery attempts so far, all-time.
    pub attempts: u32,
    /// Attempts since the last (re-)arm: what the retry budget counts.
    pub attempts_since_arm: u32,
    /// Reminders sent.
    pub reminders: u32,
    /// Latest delivery error.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
    /// Intake time.
    pub created_at: Timestamp,
    /// First delivery or pull.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_instructed_at: Option<Timestamp>,
    /// Acknowledgement.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub acknowledged_at: Option<Timestamp>,
    /// Terminal time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_at: Option<Timestamp>,
    /// Next attempt (PENDING).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next_attempt_at: Option<Timestamp>,
    /// Lease end (DELIVERING).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease_expires_at: Option<Timestamp>,
    /// Outcome deadline (ACKNOWLEDGED).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply_due_at: Option<Timestamp>,
    /// When the processor's answer is due: the request's deadline less the
    /// processor's safety margin (`None` only in events recorded before
    /// instructions had due times).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_at: Option<Timestamp>,
    /// When it escalates if still open (see [`super::due_times`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub escalate_at: Option<Timestamp>,
    /// Final result (not kept in events).
    #[serde(skip)]
    pub result: Option<InstructionResult>,
    /// Who recorded the result.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_by: Option<ResolvedBy>,
    /// How many data records the result came with (they are kept apart
    /// from it, sealed; not kept in events).
    #[serde(skip)]
    pub data_records: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstructionEvent as E;
    use InstructionState as S;
    use proptest::prelude::*;

    #[test]
    fn event_bodies_leave_unset_fields_out_and_still_read_explicit_nulls() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc();
        let view = InstructionView {
            id: InstructionId::new(),
            request_id: RequestId::parse("8c56a3ce-3451-4ff5-a828-102f1a10194e").unwrap(),
            processor_id: ProcessorId::parse("vendor-a").unwrap(),
            kind: RequestKind::Delete,
            jurisdiction: Jurisdiction::Ccpa,
            submitted_at: at,
            state: S::Delivering,
            attempts: 1,
            attempts_since_arm: 1,
            reminders: 0,
            last_error: None,
            created_at: at,
            first_instructed_at: Some(at),
            acknowledged_at: None,
            resolved_at: None,
            next_attempt_at: None,
            lease_expires_at: Some(at),
            reply_due_at: None,
            due_at: None,
            escalate_at: None,
            result: None,
            resolved_by: None,
            data_records: 0,
        };
        let compact = serde_json::to_value(&view).unwrap();
        let keys: Vec<&str> = compact
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for unset in [
            "last_error",
            "acknowledged_at",
            "resolved_at",
            "reply_due_at",
            "resolved_by",
        ] {
            assert!(!keys.contains(&unset), "{unset} in {keys:?}");
        }
        assert!(keys.contains(&"lease_expires_at"));
        assert_eq!(
            serde_json::from_value::<InstructionView>(compact).unwrap(),
            view
        );
        // Bodies written before: every field, unset ones as null.
        let mut old = serde_json::to_value(&view).unwrap();
        for unset in [
            "last_error",
            "acknowledged_at",
            "resolved_at",
            "next_attempt_at",
            "reply_due_at",
            "resolved_by",
        ] {
            old[unset] = serde_json::Value::Null;
        }
        assert_eq!(
            serde_json::from_value::<InstructionView>(old).unwrap(),
            view
        );
    }

    #[test]
    fn happy_path_push() {
        let s = S::Pending.apply(E::Claim).unwrap();
        assert_eq!(s, S::Delivering);
        let s = s.apply(E::Acknowledge).unwrap();
        assert_eq!(s, S::Acknowledged);
        // A second acknowledgement is no change (nor a second event).
        assert_eq!(s.apply(E::Acknowledge), None);
        assert_eq!(s.apply(E::Resolve(Outcome::Completed)), Some(S::Completed));
    }

    #[test]
    fn lease_expiry_returns_to_pending_and_reminders_reclaim() {
        assert_eq!(S::Delivering.apply(E::LeaseExpired), Some(S::Pending));
        assert_eq!(S::Acknowledged.apply(E::Claim), Some(S::Delivering));
        assert_eq!(S::Acknowledged.apply(E::Escalate), Some(S::Escalated));
    }

    #[test]
    fn escalated_waits_for_an_operator() {
        assert_eq!(S::Escalated.apply(E::Claim), None);
        assert_eq!(S::Escalated.apply(E::RetryLater), None);
        assert_eq!(S::Escalated.apply(E::Rearm), Some(S::Pending));
        assert_eq!(
            S::Escalated.apply(E::Resolve(Outcome::NoData)),
            Some(S::NoData)
        );
        assert_eq!(S::Pending.apply(E::Rearm), None);
    }

    #[test]
    fn sources_match_apply() {
        assert_eq!(S::sources(E::Rearm), vec![S::Escalated]);
        assert_eq!(S::sources(E::RetryLater), vec![S::Delivering]);
        let cancel = S::sources(E::Cancel);
        assert!(cancel.iter().all(|s| !s.is_terminal()));
        assert_eq!(cancel.len(), 4);
    }

    fn any_event() -> impl Strategy<Value = InstructionEvent> {
        prop_oneof![
            Just(E::Claim),
            Just(E::Acknowledge),
            prop_oneof![
                Just(Outcome::Completed),
                Just(Outcome::NoData),
                Just(Outcome::Denied),
                Just(Outcome::Failed)
            ]
            .prop_map(E::Resolve),
            Just(E::RetryLater),
            Just(E::Escalate),
            Just(E::LeaseExpired),
            Just(E::Rearm),
            Just(E::Cancel),
        ]
    }

    proptest! {
        /// Whatever happens, a terminal state is never left, and names
        /// round-trip.
        #[test]
        fn terminal_states_are_final(events in proptest::collection::vec(any_event(), 0..40)) {
            let mut s = S::Pending;
            let mut terminal_seen = None;
            for e in events {
                if let Some(next) = s.apply(e) {
                    prop_assert!(terminal_seen.is_none(), "left terminal {terminal_seen:?}");
                    s = next;
                    if s.is_terminal() { terminal_seen = Some(s); }
                }
                prop_assert_eq!(S::parse(s.as_str()), Some(s));
            }
        }
    }
}
