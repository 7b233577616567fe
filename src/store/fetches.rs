//! Who fetched a finished request's access report or export, and when:
//! a DATA_FETCHED event on the request's audit trail, chained after its
//! closing event like a later removal from the suppression list.

use super::audit::write_trail;
use super::codec::{parsed, request_id};
use super::events::{EventKind, NewEvent};
use super::records::heads_of;
use super::sql::Sql;
use super::{Effects, Store, StoreError};
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
        let rows = Sql::new(
            self.backend,
            "update requests set event_seq = event_seq + 1 where id = ",
        )
        .bind(request.to_string())
        .push(" returning id, event_seq, status, audit_head")
        .query()
        .fetch_all(&mut *tx)
        .await?;
        let heads = heads_of(&rows)?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            use sqlx::Row;
            events.push(NewEvent {
                request: request_id(row, "id")?,
                seq: row.try_get("event_seq")?,
                kind: EventKind::DataFetched,
                request_status: parsed(row, "status", RequestStatus::parse)?,
                instruction: None,
                actor: Some(actor),
                extension: None,
                note: Some(what),
            });
        }
        write_trail(&mut tx, self.backend, &events, heads, Vec::new(), now).await?;
        tx.commit().await?;
        self.announce(Effects {
            touched: vec![request],
            ..Effects::default()
        });
        Ok(())
    }
}
