//! The domain: what a data-subject request, a processor, an instruction and a
//! completion record *are*, independent of how they travel (gRPC) or where
//! they are kept (SQL).
//!
//! Every type here can only be built through a checked constructor (`parse`,
//! `new`, `TryFrom`), so code that holds one never re-validates it. The two
//! lifecycles — [`RequestStatus`] and [`InstructionState`] — are pure state
//! machines with no I/O: the store asks them which transitions are legal and
//! turns the answer into conditional `UPDATE`s, so the rules live in one place.
//!
//! This module depends on nothing else in the crate and on no tonic, prost or
//! sqlx type.

mod actor;
mod adapter;
mod calendar;
mod country;
mod data_record;
mod deadline;
mod enums;
pub mod exceptions;
pub mod export;
mod fan_out;
mod ids;
mod instruction;
pub mod lookback;
mod normalize;
mod outcome;
mod processor;
mod record;
mod redact;
mod request;
mod retry;
mod snapshot;
mod subject;
mod verification;
mod violation;

pub use actor::{Actor, PrincipalName};
pub use adapter::{AdapterConfig, ProcessorTls, is_https, is_plaintext};
pub use calendar::Calendar;
pub(crate) use country::is_country_code;
pub use data_record::{CATEGORIES, COLLECTED_AHEAD, DataRecord, Disclosures, check_records};
pub use deadline::{
    DeadlinePolicy, Deadlines, Extension, ExtensionRefused, ExtensionRule, Period, Regime,
    due_times, reply_due, reply_due_extended,
};
pub use enums::*;
pub use fan_out::fan_out;
pub use ids::{InstructionId, ProcessorId, RequestId};
pub use instruction::{InstructionEvent, InstructionState, InstructionView, Transition};
pub use normalize::normal_form;
pub use outcome::{
    InstructionResult, MAX_DATA_RECORD_BYTES, MAX_DATA_RECORDS, Outcome, ResolvedBy, SubProcessor,
};
pub use processor::{
    DeliveryLimits, MAX_ADAPTIVE_IN_FLIGHT, MAX_DELIVERIES_PER_SECOND, MAX_IN_FLIGHT, Processor,
    ProcessorSpec, ProcessorStatus,
};
pub use record::{CompletionRecord, OverallOutcome, ProcessorLine, RecordFacts};
pub use redact::{REDACTED, redact_identities};
pub use request::{
    Channel, Labels, MAX_EVIDENCE_REFERENCE, NewRequest, Receipt, RequestStatus, RequestSummary,
    Terms,
};
pub use retry::RetryPolicy;
pub use snapshot::InstructionSnapshot;
pub use subject::{Subject, SubjectIdentity};
pub use verification::{AccessScope, Need, Verification, VerificationPolicy};
pub use violation::{Violation, Violations};
pub(crate) use violation::{check_len, check_text, hidden, hidden_in_text};

/// A point in time, UTC, at microsecond precision (what both databases keep).
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Truncates a timestamp to the microsecond precision the store keeps, so a
/// value read back compares equal to the value written.
pub fn truncate_to_micros(t: Timestamp) -> Timestamp {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
