//! Row encoding shared by the repositories: timestamps as integer
//! microseconds, documents as JSON text, and the decoding of instruction rows
//! into [`InstructionView`]. Everything that turns SQL values into domain
//! values lives here, so a schema change has one place to touch.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use crate::domain::{
    InstructionId, InstructionState, InstructionView, ProcessorId, RequestId, Timestamp,
};

/// Microseconds since the epoch.
pub(super) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

/// Microseconds since the epoch of `d` after `now` (a lease's end, a
/// retry's time).
pub(super) fn micros_after(now: Timestamp, d: std::time::Duration) -> i64 {
    micros(now + chrono::Duration::from_std(d).unwrap_or_default())
}

/// Back from microseconds.
pub(super) fn from_micros(v: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {v} out of range")))
}

/// Optional timestamp column.
pub(super) fn opt_time(row: &AnyRow, col: &str) -> Result<Option<Timestamp>, StoreError> {
    row.try_get::<Option<i64>, _>(col)?
        .map(from_micros)
        .transpose()
}

/// Required timestamp column.
pub(super) fn time(row: &AnyRow, col: &str) -> Result<Timestamp, StoreError> {
    from_micros(row.try_get::<i64, _>(col)?)
}

/// JSON text of a value.
pub(super) fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("domain values always serialise")
}

/// A JSON text column.
pub(super) fn from_json<T: DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// An optional JSON text column.
pub(super) fn from_opt_json<T: DeserializeOwned>(
    row: &AnyRow,
    col: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{col}: {e}"))))
        .transpose()
}

/// A text column holding a stable enum name.
pub(super) fn parsed<T>(
    row: &AnyRow,
    col: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt(format!("{col}: unknown value {text:?}")))
}

/// A non-negative integer column as u32.
pub(super) fn count(row: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col}: {v}")))
}

pub(super) fn request_id(row: &AnyRow, col: &str) -> Result<RequestId, StoreError> {
    parsed(row, col, |s| RequestId::parse(s).ok())
}

pub(super) fn instruction_id(row: &AnyRow, col: &str) -> Result<InstructionId, StoreError> {
    parsed(row, col, |s| InstructionId::parse(s).ok())
}

pub(super) fn processor_id(row: &AnyRow, col: &str) -> Result<ProcessorId, StoreError> {
    parsed(row, col, |s| ProcessorId::parse(s).ok())
}

/// The columns [`instruction`] decodes, for `SELECT` and `RETURNING`.
pub(super) const INSTRUCTION_COLUMNS: &str = "id, request_id, processor_id, kind, jurisdiction, \
    submitted_at, state, attempts, attempts_since_arm, reminders, last_error, created_at, \
    first_instructed_at, acknowledged_at, resolved_at, next_attempt_at, lease_expires_at, \
    reply_due_at, due_at, escalate_at, result, resolved_by, data_records";

/// [`INSTRUCTION_COLUMNS`] qualified with `table.`, for statements that join.
pub(super) fn qualified(table: &str) -> String {
    INSTRUCTION_COLUMNS
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes an instruction row selected with [`INSTRUCTION_COLUMNS`].
pub(super) fn instruction(row: &AnyRow) -> Result<InstructionView, StoreError> {
    Ok(InstructionView {
        id: instruction_id(row, "id")?,
        request_id: request_id(row, "request_id")?,
        processor_id: processor_id(row, "processor_id")?,
        kind: parsed(row, "kind", |s| s.parse().ok())?,
        jurisdiction: parsed(row, "jurisdiction", |s| s.parse().ok())?,
        submitted_at: time(row, "submitted_at")?,
        state: parsed(row, "state", InstructionState::parse)?,
        attempts: count(row, "attempts")?,
        attempts_since_arm: count(row, "attempts_since_arm")?,
        reminders: count(row, "reminders")?,
        last_error: row.try_get("last_error")?,
        created_at: time(row, "created_at")?,
        first_instructed_at: opt_time(row, "first_instructed_at")?,
        acknowledged_at: opt_time(row, "acknowledged_at")?,
        resolved_at: opt_time(row, "resolved_at")?,
        next_attempt_at: opt_time(row, "next_attempt_at")?,
        lease_expires_at: opt_time(row, "lease_expires_at")?,
        reply_due_at: opt_time(row, "reply_due_at")?,
        due_at: opt_time(row, "due_at")?,
        escalate_at: opt_time(row, "escalate_at")?,
        result: from_opt_json(row, "result")?,
        resolved_by: from_opt_json(row, "resolved_by")?,
        data_records: count(row, "data_records")?,
    })
}

/// `'A', 'B'` for an SQL `IN (...)` list of instruction states. The names are
/// our own constants, never input, so inlining them is safe.
pub(super) fn state_list(states: &[InstructionState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The adapter kinds the dispatcher pushes through, for SQL.
pub(super) const PUSH_KINDS: &str = "('grpc', 'webhook', 'dsr', 'opendsr')";

/// The states of open requests, for SQL.
pub(super) const OPEN: &str = "('RECEIVED', 'IN_PROGRESS')";
