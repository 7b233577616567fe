//! Completion records: assembled from the request and its final instruction
//! lines, encoded canonically, digested, and inserted exactly once — in the
//! transaction that closed the last instruction (see the `transition` module).

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::codec::{from_json, instruction, micros, opt_time, parsed, qualified, request_id, time};
use super::events::{EventKind, NewEvent};
use super::export_digest::export_sha256;
use super::sql::Sql;
use super::trail::{Bump, write_changes};
use super::{Backend, ClosedRequest, Effects, Store, StoreError};
use crate::domain::export::pieces_owed;
use crate::domain::{
    AccessScope, Actor, CompletionRecord, Extension, InstructionView, OverallOutcome,
    ProcessorLine, RecordFacts, RequestId, RequestStatus, Timestamp, Verification,
};
use crate::seal::Keyring;

/// What [`lock_requests`] reads of a request before a change: the facts
/// a record is assembled from, the request's sequence number and status,
/// and the head of its audit trail before the change.
const CLOSED_COLUMNS: &str = "requests.id as id, requests.kind as kind, \
     requests.jurisdiction as jurisdiction, requests.submitted_at as submitted_at, \
     requests.received_at as received_at, requests.channel as channel, \
     requests.requester as requester, requests.verification_level as verification_level, \
     requests.verification_method as verification_method, \
     requests.cancel_reason as cancel_reason, requests.event_seq as event_seq, \
     requests.status as status, requests.access_scope as access_scope, \
     requests.respond_by as respond_by, requests.extended_from as extended_from, \
     requests.extension_reason as extension_reason, requests.extended_by as extended_by, \
     requests.extended_at as extended_at, requests.confirmed_at as confirmed_at, \
     requests.denied as denied, requests.audit_head as audit_head";

/// Reads the rows of requests `ids` before a change to them: the
/// [`CLOSED_COLUMNS`] and the count of open instructions, locked on
/// PostgreSQL in id order, the order every transaction locks request rows
/// in (SQLite's one writer needs no lock).
pub(super) async fn lock_requests<S: Into<String>>(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: impl IntoIterator<Item = S>,
) -> Result<Vec<AnyRow>, StoreError> {
    let mut sql = Sql::new(
        backend,
        "select requests.open_instructions as open_instructions, ",
    );
    sql.push(CLOSED_COLUMNS)
        .push(" from requests where ")
        .in_list("requests.id", ids);
    if backend == Backend::Postgres {
        sql.push(" order by requests.id for update");
    }
    Ok(sql.query().fetch_all(&mut *conn).await?)
}

/// Each row's audit head (see [`CLOSED_COLUMNS`]), by request.
pub(super) fn heads_of<'r>(
    rows: impl IntoIterator<Item = &'r AnyRow>,
) -> Result<BTreeMap<RequestId, String>, StoreError> {
    let mut heads = BTreeMap::new();
    for row in rows {
        if let Some(head) = row.try_get::<Option<String>, _>("audit_head")? {
            heads.insert(request_id(row, "id")?, head);
        }
    }
    Ok(heads)
}

/// The extension recorded on a request row, if any (columns
/// `respond_by`, `extended_from`, `extension_reason`, `extended_by`,
/// `extended_at`).
pub(super) fn extension_of(row: &AnyRow) -> Result<Option<Extension>, StoreError> {
    let Some(original_deadline) = opt_time(row, "extended_from")? else {
        return Ok(None);
    };
    Ok(Some(Extension {
        original_deadline,
        new_deadline: time(row, "respond_by")?,
        reason: row
            .try_get::<Option<String>, _>("extension_reason")?
            .unwrap_or_default(),
        declared_by: row
            .try_get::<Option<String>, _>("extended_by")?
            .unwrap_or_default(),
        declared_at: opt_time(row, "extended_at")?.unwrap_or(original_deadline),
    }))
}

/// Closes `requests`, which have nothing open (COMPLETED, or CANCELLED
/// when a cancel reason is set), and writes their records and last
/// events: intake's requests that no processor matched or that were
/// denied for lack of verification. (Requests closed by their last
/// instruction are closed by the same update that counts it, see
/// `after_changes`, and recorded by [`record_closed`].)
pub(super) async fn write_records(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    requests: &[(RequestId, &Actor)],
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    if requests.is_empty() {
        return Ok(());
    }
    // Read under their locks and written once, by the update that keeps
    // the new audit heads.
    let ids = requests.iter().map(|(id, _)| id.to_string());
    let rows = lock_requests(conn, backend, ids).await?;
    let heads = heads_of(&rows)?;
    let mut bumps = BTreeMap::new();
    let mut closed = Vec::with_capacity(rows.len());
    for row in &rows {
        let status = match row.try_get::<Option<String>, _>("cancel_reason")? {
            None => RequestStatus::Completed,
            Some(_) => RequestStatus::Cancelled,
        };
        let seq = row.try_get::<i64, _>("event_seq")? + 1;
        bumps.insert(
            request_id(row, "id")?,
            Bump {
                event_seq: seq,
                open_instructions: row.try_get("open_instructions")?,
                status,
                closed_at: Some(micros(now)),
            },
        );
        closed.push(Closing { row, status, seq });
    }
    let (records, last) = record_closed(conn, backend, keys, &closed, now, effects).await?;
    let events: Vec<NewEvent> = last
        .into_iter()
        .map(|last| {
            let actor = requests.iter().find(|(id, _)| *id == last.request);
            NewEvent {
                actor: actor.map(|(_, a)| *a),
                ..last
            }
        })
        .collect();
    write_changes(conn, backend, &events, heads, &bumps, records, now).await
}

/// A request closing in this transaction: its row as read (with
/// [`CLOSED_COLUMNS`]), and its status and last sequence number once
/// closed.
pub(super) struct Closing<'r> {
    /// The row.
    pub row: &'r AnyRow,
    /// COMPLETED or CANCELLED.
    pub status: RequestStatus,
    /// The sequence number of its last event.
    pub seq: i64,
}

/// Assembles the records of requests just closed, from their rows
/// ([`Closing`]), and their last events
/// (COMPLETED or CANCELLED, at the closing sequence number), for the
/// caller to chain and write with its own ([`write_changes`]). Called once
/// per request, in the transaction that closed it; a batch costs one
/// statement whatever its size.
pub(super) async fn record_closed(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    closed: &[Closing<'_>],
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(Vec<CompletionRecord>, Vec<NewEvent<'static>>), StoreError> {
    if closed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids = closed
        .iter()
        .map(|c| c.row.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sql = Sql::new(
        backend,
        format!(
            "select {}, p.display_name, p.role, p.country from instructions \
         join processors p on p.id = instructions.processor_id where ",
            qualified("instructions")
        ),
    );
    sql.in_list("instructions.request_id", ids);
    let line_rows = sql.query().fetch_all(&mut *conn).await?;
    let mut lines: BTreeMap<RequestId, Vec<ProcessorLine>> = BTreeMap::new();
    for row in &line_rows {
        let view = instruction(row)?;
        lines
            .entry(view.request_id)
            .or_default()
            .push(line(row, &view)?);
    }

    let mut records = Vec::with_capacity(closed.len());
    let mut events = Vec::with_capacity(closed.len());
    for &Closing {
        row: req,
        status,
        seq,
    } in closed
    {
        let id = request_id(req, "id")?;
        events.push(NewEvent {
            request: id,
            seq,
            kind: if status == RequestStatus::Cancelled {
                EventKind::Cancelled
            } else {
                EventKind::Completed
            },
            request_status: status,
            instruction: None,
            actor: None,
            extension: None,
            note: None,
        });
        let facts = RecordFacts {
            request_id: id,
            kind: parsed(req, "kind", |s| s.parse().ok())?,
            jurisdiction: parsed(req, "jurisdiction", |s| s.parse().ok())?,
            submitted_at: time(req, "submitted_at")?,
            received_at: time(req, "received_at")?,
            channel: req.try_get("channel")?,
            requester: parsed(req, "requester", |s| s.parse().ok())?,
            verification: Verification {
                level: parsed(req, "verification_level", |s| s.parse().ok())?,
                method: req.try_get("verification_method")?,
            },
            access_scope: req
                .try_get::<Option<String>, _>("access_scope")?
                .and_then(|s| AccessScope::parse(&s)),
            respond_by: time(req, "respond_by")?,
            extension: extension_of(req)?,
            receipt_confirmed_at: opt_time(req, "confirmed_at")?,
            cancel_reason: req.try_get("cancel_reason")?,
            denied_unverified: req.try_get::<Option<String>, _>("denied")?.is_some(),
        };
        let mut record =
            CompletionRecord::assemble(facts, now, lines.remove(&id).unwrap_or_default());
        // A cancelled request's export is never given out (see
        // `api::access_report`): its record names none.
        if pieces_owed(record.kind, record.access_scope) == Some(true)
            && record.outcome != OverallOutcome::Cancelled
        {
            record.export_sha256 = match export_sha256(conn, backend, keys, &record).await {
                Ok(digest) => Some(digest),
                // Records that do not open (a key removed too early) must
                // not hold the request open: its record goes without.
                Err(e @ (StoreError::Sealed(_) | StoreError::Corrupt(_))) => {
                    tracing::error!(request_id = %id, error = %e, "the export digest could not be taken; the record goes without it");
                    None
                }
                Err(e) => return Err(e),
            };
        }
        records.push(record);
    }
    effects.closed.extend(records.iter().map(|r| ClosedRequest {
        id: r.request_id,
        kind: r.kind,
        jurisdiction: r.jurisdiction,
        outcome: r.outcome,
    }));
    Ok((records, events))
}

/// One processor line of a record, from an instruction row joined with its
/// processor.
fn line(row: &AnyRow, view: &InstructionView) -> Result<ProcessorLine, StoreError> {
    let result = view.result.as_ref();
    Ok(ProcessorLine {
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
        // Kept apart from the result (results written before records were
        // sealed apart still carry theirs).
        data_records: view.data_records + result.map_or(0, |r| r.records.len() as u32),
    })
}

impl Store {
    /// The record of a finished request with its digest and canonical bytes;
    /// `FailedPrecondition` while the request is open.
    pub async fn completion_record(
        &self,
        request: RequestId,
    ) -> Result<(CompletionRecord, String, Vec<u8>), StoreError> {
        let row = Sql::new(
            self.backend,
            "select canonical_json, digest from completion_records where request_id = ",
        )
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
        Sql::new(self.backend, "select id from requests where id = ")
            .bind(request.to_string())
            .query()
            .fetch_optional(&self.pool)
            .await?
            .map(|_| ())
            .ok_or_else(|| StoreError::not_found("request", request))
    }
}
