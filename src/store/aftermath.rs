//! What follows every change to instructions, in the same transaction:
//! each request is bumped (its row lock taken, which serialises changes to
//! one request across replicas; its sequence numbers, its count of open
//! instructions, its status), the requests whose last open instruction
//! just closed get their completion records, and every event is appended,
//! with who made the change, in one statement, chained onto its request's
//! audit trail.
//!
//! Lock order, on PostgreSQL, is always: instruction rows by id, then
//! request rows by id. Every transaction follows it, so none can deadlock
//! another.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, Row};

use super::audit::write_trail;
use super::codec::{micros, parsed};
use super::events::{EventKind, NewEvent};
use super::records::{CLOSED_COLUMNS, heads_of, record_closed};
use super::sql::{Bind, Col, Sql};
use super::{Backend, Effects, StoreError};
use crate::domain::{
    Actor, InstructionState, InstructionView, RequestId, RequestStatus, Timestamp,
};
use crate::seal::Keyring;

/// Who makes the changes of one call, for their events.
#[derive(Clone, Copy, Debug)]
pub(super) enum By<'a> {
    /// One actor for every change (an operator, a processor's callback,
    /// the caller cancelling a request).
    Actor(&'a Actor),
    /// The dispatcher's doing: the processor for its answers (accepted or
    /// final), the orchestrator for everything else (claims, retries,
    /// escalations).
    Dispatch,
}

impl By<'_> {
    /// The actor of `view`'s change.
    pub fn actor_for(&self, view: &InstructionView) -> Actor {
        match self {
            By::Actor(actor) => (*actor).clone(),
            By::Dispatch
                if view.state == InstructionState::Acknowledged || view.state.is_terminal() =>
            {
                Actor::Processor(view.processor_id.clone())
            }
            By::Dispatch => Actor::System,
        }
    }
}

/// Takes the row locks of `ids` in id order (PostgreSQL only; SQLite's
/// `BEGIN IMMEDIATE` already serialises writers).
pub(super) async fn lock_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    mut ids: Vec<String>,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres || ids.is_empty() {
        return Ok(());
    }
    ids.sort();
    ids.dedup();
    let mut sql = Sql::new(backend, format!("select id from {table} where "));
    sql.in_list("id", ids).push(" order by id for update");
    sql.query().fetch_all(&mut *conn).await?;
    Ok(())
}

/// Records that `changed` just changed: bumps each request (lock, sequence
/// numbers, open count, RECEIVED -> IN_PROGRESS, and closed when nothing is
/// left open), writes the records of the requests it closed, and appends
/// every event in order, the closed requests' last ones included, in one
/// statement.
pub(super) async fn after_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    changed: &[InstructionView],
    by: By<'_>,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    if changed.is_empty() {
        return Ok(());
    }
    effects.changed.extend_from_slice(changed);
    effects.touched.extend(changed.iter().map(|v| v.request_id));
    // Per request: how many events, how many instructions closed.
    let mut per_request: BTreeMap<RequestId, (i64, i64)> = BTreeMap::new();
    for v in changed {
        let e = per_request.entry(v.request_id).or_default();
        e.0 += 1;
        e.1 += i64::from(v.state.is_terminal());
    }
    lock_rows(
        conn,
        backend,
        "requests",
        per_request.keys().map(ToString::to_string).collect(),
    )
    .await?;
    let mut sql = Sql::new(backend, "with v as (");
    sql.select_rows(
        &[("id", Col::Text), ("n", Col::Int), ("closes", Col::Int)],
        per_request.iter().map(|(id, (n, closes))| {
            vec![
                Bind::from(id.to_string()),
                Bind::from(*n),
                Bind::from(*closes),
            ]
        }),
    );
    // A request whose last open instruction closes here is closed by the
    // same update (one row version, not two): its status, its closing time
    // and one more sequence number, for its last event.
    let closing = "(v.closes > 0 and requests.open_instructions = v.closes)";
    sql.push(&format!(
        ") update requests set \
         event_seq = requests.event_seq + v.n + case when {closing} then 1 else 0 end, \
         open_instructions = requests.open_instructions - v.closes, \
         status = case when {closing} then \
             case when requests.cancel_reason is null then 'COMPLETED' else 'CANCELLED' end \
           when requests.status = 'RECEIVED' then 'IN_PROGRESS' else requests.status end, \
         closed_at = case when {closing} then "
    ))
    .bind(micros(now))
    .push(" else requests.closed_at end from v where requests.id = v.id and ")
    .in_cte("requests.id", "v", "id")
    .push(" returning requests.open_instructions as open_instructions, ")
    .push(CLOSED_COLUMNS);
    let rows = sql.query().fetch_all(&mut *conn).await?;
    let heads = heads_of(&rows)?;
    // Per request: the sequence number before this change's events, and
    // the request's status as its instruction events report it.
    let mut last_seq: BTreeMap<RequestId, (i64, RequestStatus)> = BTreeMap::new();
    let mut closed = Vec::new();
    for row in &rows {
        let id = super::codec::request_id(row, "id")?;
        let seq: i64 = row.try_get("event_seq")?;
        let open: i64 = row.try_get("open_instructions")?;
        let (n, closes) = per_request[&id];
        let closes_here = closes > 0 && open == 0;
        let before = seq - n - i64::from(closes_here);
        let status = parsed(row, "status", RequestStatus::parse)?;
        let during = match status {
            // Closed by this change: until its last event the request is
            // what it was, in progress, or still received when nothing but
            // its first event came before (a cancel before any claim).
            s if s.is_terminal() && before == 1 => RequestStatus::Received,
            s if s.is_terminal() => RequestStatus::InProgress,
            s => s,
        };
        last_seq.insert(id, (before, during));
        if closes_here {
            closed.push(row);
        }
    }
    let actors: Vec<Actor> = changed.iter().map(|v| by.actor_for(v)).collect();
    // A request's last event is by whoever made the change that closed it.
    let closer: BTreeMap<RequestId, &Actor> = changed
        .iter()
        .zip(&actors)
        .map(|(v, a)| (v.request_id, a))
        .collect();
    let mut events = Vec::with_capacity(changed.len());
    for (v, actor) in changed.iter().zip(&actors) {
        let (seq, status) = last_seq
            .get_mut(&v.request_id)
            .ok_or_else(|| StoreError::Corrupt(format!("request {} vanished", v.request_id)))?;
        *seq += 1;
        events.push(NewEvent {
            request: v.request_id,
            seq: *seq,
            kind: EventKind::InstructionChanged,
            request_status: *status,
            instruction: Some(v),
            actor: Some(actor),
            extension: None,
            note: None,
        });
    }
    let (records, last) = record_closed(conn, backend, keys, &closed, now, effects).await?;
    for last in last {
        let actor = closer.get(&last.request).copied();
        events.push(NewEvent { actor, ..last });
    }
    write_trail(conn, backend, &events, heads, records, now).await
}
