//! Who fetched a finished request's access report or export, and when:
//! a DATA_FETCHED event on the request's audit trail, chained after its
//! closing event like a later removal from the suppression list (both
//! through [`append_notes`]).

use sqlx::{AnyConnection, Row};

use super::codec::{parsed, request_id};
use super::events::{EventKind, NewEvent};
use super::records::heads_of;
use super::sql::Sql;
use super::trail::write_trail;
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
    let mut sql = Sql::new(
        backend,
        "update requests set event_seq = event_seq + 1 where ",
    );
    sql.in_list("id", requests)
        .push(" returning id, event_seq, status, audit_head");
    let rows = sql.query().fetch_all(&mut *conn).await?;
    let heads = heads_of(&rows)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        events.push(NewEvent {
            request: request_id(row, "id")?,
            seq: row.try_get("event_seq")?,
            kind: note.kind,
            request_status: parsed(row, "status", RequestStatus::parse)?,
            instruction: None,
            actor: Some(note.actor),
            extension: None,
            note: Some(note.text),
        });
    }
    write_trail(conn, backend, &events, heads, Vec::new(), now).await?;
    Ok(events.iter().map(|e| e.request).collect())
}
