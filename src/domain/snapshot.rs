//! An instruction as the request history shows it: what an event says
//! about the instruction that changed.
//!
//! An event's body is written in the transaction of every change and kept
//! with the request, so it holds only what the history shows
//! (`InstructionSummary`): the instruction's own state and times. The
//! request's facts (its id, kind, regime, date) are the request's and
//! are not repeated in each of its events, and neither is the
//! dispatcher's bookkeeping (leases, reminders, the retry budget's
//! count). Bodies written with the whole [`InstructionView`] still read:
//! the fields left out are ignored.

use serde::{Deserialize, Serialize};

use super::{InstructionId, InstructionState, InstructionView, ProcessorId, Timestamp};

/// The instruction after the change an event records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstructionSnapshot {
    /// Stable id.
    pub id: InstructionId,
    /// Its processor.
    pub processor_id: ProcessorId,
    /// State.
    pub state: InstructionState,
    /// Delivery attempts so far, all-time.
    pub attempts: u32,
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
    /// When the processor's answer is due.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due_at: Option<Timestamp>,
    /// When it escalates if still open.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub escalate_at: Option<Timestamp>,
}

impl From<&InstructionView> for InstructionSnapshot {
    fn from(v: &InstructionView) -> Self {
        Self {
            id: v.id,
            processor_id: v.processor_id.clone(),
            state: v.state,
            attempts: v.attempts,
            last_error: v.last_error.clone(),
            created_at: v.created_at,
            first_instructed_at: v.first_instructed_at,
            acknowledged_at: v.acknowledged_at,
            resolved_at: v.resolved_at,
            next_attempt_at: v.next_attempt_at,
            due_at: v.due_at,
            escalate_at: v.escalate_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_written_as_it_reads_back_and_a_whole_view_still_reads() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let view: InstructionView = serde_json::from_value(serde_json::json!({
            "id": "01a243f9-4101-7016-9493-7ed8625a1c31",
            "request_id": "2f814528-283d-489c-b862-ad8c098a27d0",
            "processor_id": "crm",
            "kind": "DELETE",
            "jurisdiction": "CCPA",
            "submitted_at": at,
            "state": "DELIVERING",
            "attempts": 1,
            "attempts_since_arm": 1,
            "reminders": 0,
            "created_at": at,
            "lease_expires_at": at,
            "due_at": at,
        }))
        .unwrap();
        let written = serde_json::to_string(&InstructionSnapshot::from(&view)).unwrap();
        assert!(!written.contains("request_id") && !written.contains("lease"));
        let read: InstructionSnapshot = serde_json::from_str(&written).unwrap();
        assert_eq!(read, InstructionSnapshot::from(&view));
        let whole: InstructionSnapshot =
            serde_json::from_str(&serde_json::to_string(&view).unwrap()).unwrap();
        assert_eq!(whole, read, "a body of the whole view reads the same");
    }
}
