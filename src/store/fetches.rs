//! Who fetched a finished request's access report or export, and when:
//! a DATA_FETCHED event on the request's audit trail, chained after its
//! closing event like a later removal from the suppression list (both
//! through [`append_notes`]).

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::codec::{parsed, request_id};
use super::events::{EventKind, NewEvent};
use super::records::{heads_of, lock_requests};
use super::trail::{Bump, write_changes};
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{Actor, RequestId, RequestStatus, Timestamp};

impl Store {
    /// Appends to `request`'s audit trail that `actor` fetched `what`
    /// (e.g. "access report", or an export file and its SHA-256).
    pub async fn record_fetch(
        &self,
        request: RequestId,
        what: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let note = Note {
            kind: EventKind::DataFetched,
            actor,
            text: what,
        };
        let touched =
            append_notes(&mut tx, self.backend, vec![request.to_string()], note, now).await?;
        tx.commit().await?;
        self.announce(Effects {
            touched,
            ..Effects::default()
        });
        Ok(())
    }
}

/// An event that notes something about requests after they closed.
pub(super) struct Note<'a> {
    /// DATA_FETCHED or SUPPRESSION_REMOVED.
    pub kind: EventKind,
    /// Who.
    pub actor: &'a Actor,
    /// What, or why.
    pub text: &'a str,
}

/// Appends `note` to the audit trail of each request in `requests` (ids),
/// chained after its last event; returns the requests noted.
pub(super) async fn append_notes(
    conn: &mut AnyConnection,
    backend: Backend,
    requests: Vec<String>,
    note: Note<'_>,
    now: Timestamp,
) -> Result<Vec<RequestId>, StoreError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    // Read under their locks and written once, by the update that keeps
    // the new audit heads.
    let rows = lock_requests(conn, backend, requests).await?;
    let heads = heads_of(&rows)?;
    let mut bumps = BTreeMap::new();
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let request = request_id(row, "id")?;
        let seq = row.try_get::<i64, _>("event_seq")? + 1;
        let status = parsed(row, "status", RequestStatus::parse)?;
        bumps.insert(
            request,
            Bump {
                event_seq: seq,
                open_instructions: row.try_get("open_instructions")?,
                status,
                closed_at: None,
            },
        );
        events.push(NewEvent {
            request,
            seq,
            kind: note.kind,
            request_status: status,
            instruction: None,
            actor: Some(note.actor),
            extension: None,
            note: Some(note.text),
        });
    }
    write_changes(conn, backend, &events, heads, &bumps, Vec::new(), now).await?;
    Ok(events.iter().map(|e| e.request).collect())
}
