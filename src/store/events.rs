//! The request history: an append-only, gap-free sequence of events per
//! request, written in the same transaction as the change it describes.
//! `WatchRequest` replays it and then follows it, so a watcher sees every
//! change in order even if it connects late or to another replica.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::codec::{json, micros, request_id, time};
use super::sql::{Bind, Col, Sql};
use super::{Backend, Store, StoreError};
use crate::domain::{Actor, InstructionView, RequestId, RequestStatus, Timestamp};

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The request was taken in.
    Received,
    /// One instruction changed.
    InstructionChanged,
    /// The request completed; terminal.
    Completed,
    /// The request was cancelled; terminal.
    Cancelled,
}

impl EventKind {
    /// Whether this is the request's last event.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }
}

/// One entry of a request's history.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestEvent {
    /// The request.
    pub request_id: RequestId,
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// When it was recorded.
    pub occurred_at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The request's status after it.
    pub request_status: RequestStatus,
    /// The instruction after the change (no result).
    pub instruction: Option<InstructionView>,
    /// Who made the change (`None` in events recorded before actors were).
    pub actor: Option<Actor>,
}

/// The stored event body: written from a borrowed instruction (no copy on
/// the hot path), read back into an owned one.
#[derive(Serialize, Deserialize)]
struct Body<I, A> {
    kind: EventKind,
    request_status: RequestStatus,
    instruction: Option<I>,
    #[serde(skip_serializing_if = "Option::is_none", default = "Option::default")]
    actor: Option<A>,
}

/// An event about to be appended.
pub(super) struct NewEvent<'a> {
    /// The request.
    pub request: RequestId,
    /// Its sequence number (from the request row's bump).
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// The request's status after it.
    pub request_status: RequestStatus,
    /// The instruction after the change.
    pub instruction: Option<&'a InstructionView>,
    /// Who made the change.
    pub actor: Option<&'a Actor>,
}

/// Appends events, all in one statement.
pub(super) async fn append_events(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[NewEvent<'_>],
    now: Timestamp,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(backend, INSERT_EVENTS);
    select_events(&mut sql, events, now);
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// The head of an insert of [`select_events`]' rows.
pub(super) const INSERT_EVENTS: &str =
    "insert into request_events (request_id, seq, occurred_at, body) ";

/// Appends a `SELECT` of `events` as `request_events` rows (columns
/// `request_id`, `seq`, `occurred_at`, `body`), for an insert to take.
pub(super) fn select_events(sql: &mut Sql, events: &[NewEvent<'_>], now: Timestamp) {
    sql.select_rows(
        &[
            ("request_id", Col::Text),
            ("seq", Col::Int),
            ("occurred_at", Col::Int),
            ("body", Col::Text),
        ],
        events.iter().map(|e| {
            let body = json(&Body {
                kind: e.kind,
                request_status: e.request_status,
                instruction: e.instruction,
                actor: e.actor,
            });
            vec![
                Bind::from(e.request.to_string()),
                Bind::from(e.seq),
                Bind::from(micros(now)),
                Bind::from(body),
            ]
        }),
    );
}

impl Store {
    /// Events of `request` after sequence `after`, in order (at most `limit`).
    pub async fn events_after(
        &self,
        request: RequestId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RequestEvent>, StoreError> {
        let rows = Sql::new(
            self.backend,
            "select request_id, seq, occurred_at, body from request_events where request_id = ",
        )
        .bind(request.to_string())
        .push(" and seq > ")
        .bind(after as i64)
        .push(" order by seq limit ")
        .bind(i64::from(limit))
        .query()
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("body")?;
                let body: Body<InstructionView, Actor> = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))?;
                Ok(RequestEvent {
                    request_id: request_id(row, "request_id")?,
                    seq: row.try_get::<i64, _>("seq")? as u64,
                    occurred_at: time(row, "occurred_at")?,
                    kind: body.kind,
                    request_status: body.request_status,
                    instruction: body.instruction,
                    actor: body.actor,
                })
            })
            .collect()
    }
}
