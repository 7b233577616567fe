//! Completion records: assembled from the request and its final instruction
//! lines, encoded canonically, digested, and inserted exactly once — in the
//! transaction that closed the last instruction (see [`super::transition`]).

use sqlx::{AnyConnection, Row};

use super::codec::{INSTRUCTION_COLUMNS, from_json, instruction, micros, parsed, time};
use super::events::{EventKind, append_event};
use super::transition::Sql;
use super::{Store, StoreError};
use crate::domain::{
    CompletionRecord, ProcessorLine, RequestId, RequestStatus, Timestamp, Verification,
};

/// Writes the record of `request` and closes it (COMPLETED, or CANCELLED if
/// a cancel reason is set). Called once, when its last instruction closed.
pub(super) async fn write_record(
    conn: &mut AnyConnection,
    request: RequestId,
    now: Timestamp,
) -> Result<(), StoreError> {
    let id = request.to_string();
    let req = Sql::new(
        "select kind, jurisdiction, submitted_at, received_at, channel, requester, \
         verification_level, verification_method, cancel_reason from requests where id = ",
    )
    .bind(id.clone())
    .query()
    .fetch_one(&mut *conn)
    .await?;
    let columns = INSTRUCTION_COLUMNS
        .split(", ")
        .map(|c| format!("i.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = Sql::new(format!(
        "select {columns}, p.display_name, p.role, p.country from instructions i \
         join processors p on p.id = i.processor_id where i.request_id = "
    ))
    .bind(id.clone())
    .query()
    .fetch_all(&mut *conn)
    .await?;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let view = instruction(row)?;
        let result = view.result.as_ref();
        lines.push(ProcessorLine {
            processor_id: view.processor_id.clone(),
            display_name: row.try_get("display_name")?,
            role: row.try_get("role")?,
            country: row.try_get("country")?,
            instruction_id: view.id,
            first_instructed_at: view.first_instructed_at,
            acknowledged_at: view.acknowledged_at,
            resolved_at: view.resolved_at,
            attempts: view.attempts,
            state: view.state,
            exception: result.and_then(|r| r.exception),
            explanation: result.map(|r| r.explanation.clone()).unwrap_or_default(),
            reason: result.map(|r| r.reason.clone()).unwrap_or_default(),
            sub_processors: result.map(|r| r.sub_processors.clone()).unwrap_or_default(),
            resolved_by: view
                .resolved_by
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            data_records: result.map_or(0, |r| r.records.len() as u32),
        });
    }
    let cancel_reason: Option<String> = req.try_get("cancel_reason")?;
    let cancelled = cancel_reason.is_some();
    let record = CompletionRecord::assemble(
        request,
        parsed(&req, "kind", |s| s.parse().ok())?,
        parsed(&req, "jurisdiction", |s| s.parse().ok())?,
        time(&req, "submitted_at")?,
        time(&req, "received_at")?,
        req.try_get("channel")?,
        parsed(&req, "requester", |s| s.parse().ok())?,
        Verification {
            level: parsed(&req, "verification_level", |s| s.parse().ok())?,
            method: req.try_get("verification_method")?,
        },
        now,
        lines,
        cancel_reason,
    );
    let canonical = record.canonical_json();
    let digest = CompletionRecord::digest_of(&canonical);
    let inserted = Sql::new(
        "insert into completion_records (request_id, canonical_json, digest, created_at) values (",
    )
    .bind(id.clone())
    .push(", ")
    .bind(String::from_utf8(canonical).expect("JSON is UTF-8"))
    .push(", ")
    .bind(digest)
    .push(", ")
    .bind(micros(now))
    .push(") on conflict (request_id) do nothing")
    .query()
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() != 1 {
        // The request row lock makes this unreachable; refuse rather than
        // report a second, different proof.
        return Err(StoreError::Corrupt(format!(
            "completion record of {request} already exists"
        )));
    }
    let (status, kind) = if cancelled {
        (RequestStatus::Cancelled, EventKind::Cancelled)
    } else {
        (RequestStatus::Completed, EventKind::Completed)
    };
    let row = Sql::new("update requests set status = ")
        .bind(status.as_str())
        .push(", closed_at = ")
        .bind(micros(now))
        .push(", event_seq = event_seq + 1 where id = ")
        .bind(id)
        .push(" returning event_seq")
        .query()
        .fetch_one(&mut *conn)
        .await?;
    let seq: i64 = row.try_get("event_seq")?;
    append_event(conn, request, seq, now, kind, status, None).await
}

impl Store {
    /// The record of a finished request with its digest and canonical bytes;
    /// `FailedPrecondition` while the request is open.
    pub async fn completion_record(
        &self,
        request: RequestId,
    ) -> Result<(CompletionRecord, String, Vec<u8>), StoreError> {
        let row =
            Sql::new("select canonical_json, digest from completion_records where request_id = ")
                .bind(request.to_string())
                .query()
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(row) => {
                let record: CompletionRecord = from_json(&row, "canonical_json")?;
                let bytes: String = row.try_get("canonical_json")?;
                Ok((record, row.try_get("digest")?, bytes.into_bytes()))
            }
            None => {
                self.request_exists(request).await?;
                Err(StoreError::FailedPrecondition(
                    "the request is still open; its record is written when it finishes".into(),
                ))
            }
        }
    }

    /// `NotFound` unless the request exists.
    pub(super) async fn request_exists(&self, request: RequestId) -> Result<(), StoreError> {
        Sql::new("select id from requests where id = ")
            .bind(request.to_string())
            .query()
            .fetch_optional(&self.pool)
            .await?
            .map(|_| ())
            .ok_or(StoreError::NotFound("request"))
    }
}
