//! The request history: an append-only, gap-free sequence of events per
//! request, written in the same transaction as the change it describes.
//! `WatchRequest` replays it and then follows it, so a watcher sees every
//! change in order even if it connects late or to another replica. Each
//! event is chained to the one before it by hash (see [`super::audit`]).

use std::collections::HashSet;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::audit::GENESIS;
use super::codec::{json, request_id, time};
use super::sql::{Bind, Col, Sql};
use super::{Backend, Store, StoreError};
use crate::domain::{
    Actor, Extension, InstructionId, InstructionSnapshot, InstructionState, InstructionView,
    RequestId, RequestStatus, Timestamp,
};

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
    /// The business confirmed receipt to the person.
    ReceiptConfirmed,
    /// The response deadline was extended.
    DeadlineExtended,
    /// After the request closed: its subject left the suppression list.
    SuppressionRemoved,
    /// After the request closed: its access report or export was fetched.
    DataFetched,
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
    /// The instruction after the change.
    pub instruction: Option<InstructionSnapshot>,
    /// Who made the change (`None` in events recorded before actors were).
    pub actor: Option<Actor>,
    /// The extension a DEADLINE_EXTENDED event declares.
    pub extension: Option<Extension>,
    /// Why, for a SUPPRESSION_REMOVED event; what was fetched, for a
    /// DATA_FETCHED one.
    pub note: Option<String>,
    /// The previous event's hash, read from that event (see
    /// [`super::audit`]).
    pub prev_hash: Option<String>,
    /// This event's hash.
    pub hash: Option<String>,
}

/// The stored event body, with a snapshot of the instruction that changed
/// (see [`crate::domain::InstructionSnapshot`] for what an event keeps).
#[derive(Serialize, Deserialize)]
struct Body<I, A, X> {
    kind: EventKind,
    request_status: RequestStatus,
    instruction: Option<I>,
    #[serde(skip_serializing_if = "Option::is_none", default = "Option::default")]
    actor: Option<A>,
    #[serde(skip_serializing_if = "Option::is_none", default = "Option::default")]
    extension: Option<X>,
    #[serde(skip_serializing_if = "Option::is_none", default = "Option::default")]
    note: Option<String>,
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
    /// The extension a DEADLINE_EXTENDED event declares.
    pub extension: Option<&'a Extension>,
    /// Why, for a SUPPRESSION_REMOVED event; what, for a DATA_FETCHED one.
    pub note: Option<&'a str>,
}

impl NewEvent<'_> {
    /// The event's body as stored (and hashed).
    pub fn body(&self) -> String {
        json(&Body {
            kind: self.kind,
            request_status: self.request_status,
            instruction: self.instruction.map(InstructionSnapshot::from),
            actor: self.actor,
            extension: self.extension,
            note: self.note.map(str::to_string),
        })
    }
}

/// An event as inserted: its body encoded, chained to the one before.
#[derive(Clone, Debug)]
pub(super) struct SealedEvent {
    /// The request.
    pub request: RequestId,
    /// Its sequence number.
    pub seq: i64,
    /// When it was recorded (microseconds).
    pub occurred_at: i64,
    /// The body as stored.
    pub body: String,
    /// This event's hash (the previous one is that event's, not stored
    /// again).
    pub hash: String,
}

/// Inserts sealed events, all in one statement.
pub(super) async fn insert_events(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[SealedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(backend, INSERT_EVENTS);
    select_events(&mut sql, events);
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// The head of an insert of [`select_events`]' rows.
pub(super) const INSERT_EVENTS: &str =
    "insert into request_events (request_id, seq, occurred_at, body, hash) ";

/// Appends a `SELECT` of `events` as `request_events` rows, for an insert
/// to take.
pub(super) fn select_events(sql: &mut Sql, events: &[SealedEvent]) {
    sql.select_rows(
        &[
            ("request_id", Col::Text),
            ("seq", Col::Int),
            ("occurred_at", Col::Int),
            ("body", Col::Text),
            ("hash", Col::Text),
        ],
        events.iter().map(|e| {
            vec![
                Bind::from(e.request.to_string()),
                Bind::from(e.seq),
                Bind::from(e.occurred_at),
                Bind::from(e.body.clone()),
                Bind::from(e.hash.clone()),
            ]
        }),
    );
}

/// Which instructions of some requests their history shows sent (see
/// [`instructions_sent`]).
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Those with a DELIVERING event.
    sent: HashSet<InstructionId>,
    /// The requests with an event whose body does not read: which of
    /// their instructions were sent is not known.
    unknown: HashSet<RequestId>,
}

impl Sent {
    /// Whether the history shows `instruction` of `request` never sent
    /// (false where it does not say).
    pub fn never(&self, instruction: InstructionId, request: RequestId) -> bool {
        !self.unknown.contains(&request) && !self.sent.contains(&instruction)
    }
}

/// The instructions of `requests` whose history shows them sent: a
/// DELIVERING event for some attempt, written only once a lease's
/// delivery could start (see `super::claim_steps`). Read on PostgreSQL
/// after a request row is locked, it sees every such event a claim has
/// committed, and no claim of that request sends anything until the lock
/// is released (SQLite's one writer runs no claim beside the read). A
/// request with an event whose body does not read is not known; the
/// others are.
pub(super) async fn instructions_sent(
    conn: &mut AnyConnection,
    backend: Backend,
    requests: &[RequestId],
) -> Result<Sent, StoreError> {
    let mut sql = Sql::new(
        backend,
        "select request_id, body from request_events where ",
    );
    sql.in_list("request_id", requests.iter().map(ToString::to_string))
        .push(" and body like '%\"DELIVERING\"%'");
    let rows = sql.query().fetch_all(&mut *conn).await?;
    let mut sent = Sent::default();
    for row in &rows {
        let text: String = row.try_get("body")?;
        let Ok(body) =
            serde_json::from_str::<Body<InstructionSnapshot, IgnoredAny, IgnoredAny>>(&text)
        else {
            if sent.unknown.insert(request_id(row, "request_id")?) {
                tracing::warn!(
                    "an event does not read: which instructions of its request were sent is not known"
                );
            }
            continue;
        };
        if let Some(i) = body
            .instruction
            .filter(|i| i.state == InstructionState::Delivering)
        {
            sent.sent.insert(i.id);
        }
    }
    Ok(sent)
}

impl Store {
    /// Events of `request` after sequence `after`, in order (at most
    /// `limit`). Each event's previous hash is read from the event before
    /// it (the one at `after` too, for the first), where a row does not
    /// keep its own copy (see [`super::audit`]).
    pub async fn events_after(
        &self,
        request: RequestId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<RequestEvent>, StoreError> {
        let rows = Sql::new(
            self.backend,
            "select request_id, seq, occurred_at, body, prev_hash, hash from request_events \
             where request_id = ",
        )
        .bind(request.to_string())
        .push(" and seq >= ")
        .bind(after as i64)
        .push(" order by seq")
        .limit(i64::from(limit) + 1)
        .query()
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        // The previous row's sequence number and hash. Sequence numbers have
        // no gaps; where one is missing (a row removed behind the server's
        // back) the event shows no previous hash rather than a link to an
        // event that is not the one before it.
        let mut before: Option<(u64, Option<String>)> = None;
        for row in &rows {
            let seq = row.try_get::<i64, _>("seq")? as u64;
            let hash: Option<String> = row.try_get("hash")?;
            if seq <= after {
                before = Some((seq, hash));
                continue;
            }
            if events.len() == limit as usize {
                break;
            }
            let prev_hash = match row.try_get::<Option<String>, _>("prev_hash")? {
                Some(kept) => Some(kept),
                None if seq == 1 => Some(GENESIS.to_string()),
                None => before
                    .take()
                    .filter(|(s, _)| *s + 1 == seq)
                    .and_then(|(_, h)| h),
            };
            let text: String = row.try_get("body")?;
            let body: Body<InstructionSnapshot, Actor, Extension> = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))?;
            events.push(RequestEvent {
                request_id: request_id(row, "request_id")?,
                seq,
                occurred_at: time(row, "occurred_at")?,
                kind: body.kind,
                request_status: body.request_status,
                instruction: body.instruction,
                actor: body.actor,
                extension: body.extension,
                note: body.note,
                prev_hash,
                hash: hash.clone(),
            });
            before = Some((seq, hash));
        }
        Ok(events)
    }
}
