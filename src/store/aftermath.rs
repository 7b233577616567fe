//! What follows every change to instructions, in the same transaction:
//! each request is read with its row lock (which serialises changes to one
//! request across replicas) and bumped (its sequence numbers, its count of
//! open instructions, its status), the requests whose last open
//! instruction just closed get their completion records, and every event
//! is appended, with who made the change, chained onto its request's audit
//! trail. The bump is computed from the locked read and written by the
//! update that keeps the new audit head: one new version of each request
//! row a transaction, where a bump and then a head took two.
//!
//! Lock order, on PostgreSQL, is always: instruction rows by id, then
//! request rows by id. Every transaction follows it, so none can deadlock
//! another.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::codec::{micros, parsed};
use super::events::{EventKind, NewEvent};
use super::records::{Closing, heads_of, lock_requests, record_closed};
use super::sql::Sql;
use super::trail::{Bump, write_changes};
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
/// every event in order, the closed requests' last ones included, with the
/// requests' update in one statement (PostgreSQL; two on SQLite).
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
    // The rows are read, and on PostgreSQL locked in id order, first; what
    // the change moves on them is computed here and written by the one
    // update that also keeps the new audit heads (`write_changes`).
    let mut ids: Vec<String> = changed.iter().map(|v| v.request_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    let rows = lock_requests(conn, backend, ids).await?;
    after_locked(conn, backend, keys, changed, by, now, effects, &rows).await
}

/// [`after_changes`] with the request rows of `changed` already read
/// under their locks (`records::lock_requests`): `rows` holds each of
/// them once, and may hold others, which are left alone.
#[allow(clippy::too_many_arguments)]
pub(super) async fn after_locked(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    changed: &[InstructionView],
    by: By<'_>,
    now: Timestamp,
    effects: &mut Effects,
    rows: &[AnyRow],
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
    let rows: Vec<&AnyRow> = rows
        .iter()
        .filter(|row| {
            super::codec::request_id(row, "id").is_ok_and(|id| per_request.contains_key(&id))
        })
        .collect();
    let heads = heads_of(rows.iter().copied())?;
    // Per request: the sequence number before this change's events, and
    // the request's status as its instruction events report it.
    let mut last_seq: BTreeMap<RequestId, (i64, RequestStatus)> = BTreeMap::new();
    let mut bumps = BTreeMap::new();
    let mut closed = Vec::new();
    for row in rows {
        let id = super::codec::request_id(row, "id")?;
        let (n, closes) = per_request[&id];
        let before: i64 = row.try_get("event_seq")?;
        let open: i64 = row.try_get("open_instructions")?;
        let status = parsed(row, "status", RequestStatus::parse)?;
        let cancelled = row.try_get::<Option<String>, _>("cancel_reason")?.is_some();
        let bump = bump(before, open, status, cancelled, n, closes, micros(now));
        // Closed by this change: until its last event the request is what
        // it was, in progress, or still received when nothing but its
        // first event came before (a cancel before any claim).
        let during = match bump.status {
            s if s.is_terminal() && before == 1 => RequestStatus::Received,
            s if s.is_terminal() => RequestStatus::InProgress,
            s => s,
        };
        last_seq.insert(id, (before, during));
        if bump.closed_at.is_some() {
            closed.push(Closing {
                row,
                status: bump.status,
                seq: bump.event_seq,
            });
        }
        bumps.insert(id, bump);
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
    write_changes(conn, backend, &events, heads, &bumps, records, now).await
}

/// What `n` events of which `closes` close an instruction do to a request
/// that had sequence number `seq`, `open` instructions open and `status`:
/// one more sequence number each, and one for the request's last event
/// when its last open instruction closes here, which closes it (COMPLETED,
/// or CANCELLED when it was `cancelled`) at `now`; a RECEIVED request is
/// otherwise IN_PROGRESS from its first change on.
fn bump(
    seq: i64,
    open: i64,
    status: RequestStatus,
    cancelled: bool,
    n: i64,
    closes: i64,
    now: i64,
) -> Bump {
    let closing = closes > 0 && open == closes;
    Bump {
        event_seq: seq + n + i64::from(closing),
        open_instructions: open - closes,
        status: match status {
            _ if closing && cancelled => RequestStatus::Cancelled,
            _ if closing => RequestStatus::Completed,
            RequestStatus::Received => RequestStatus::InProgress,
            s => s,
        },
        closed_at: closing.then_some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_change_moves_a_request_in_progress_and_counts_its_events() {
        let b = bump(1, 5, RequestStatus::Received, false, 5, 0, 7);
        assert_eq!((b.event_seq, b.open_instructions), (6, 5));
        assert_eq!(b.status, RequestStatus::InProgress);
        assert_eq!(b.closed_at, None);
    }

    #[test]
    fn closing_the_last_open_instructions_closes_the_request_with_one_more_event() {
        let b = bump(6, 2, RequestStatus::InProgress, false, 3, 2, 7);
        assert_eq!((b.event_seq, b.open_instructions), (10, 0));
        assert_eq!(b.status, RequestStatus::Completed);
        assert_eq!(b.closed_at, Some(7));
        let cancelled = bump(1, 1, RequestStatus::Received, true, 1, 1, 7);
        assert_eq!(cancelled.status, RequestStatus::Cancelled);
        assert_eq!(cancelled.event_seq, 3);
    }

    #[test]
    fn closing_some_of_the_open_instructions_leaves_the_request_open() {
        let b = bump(6, 3, RequestStatus::InProgress, true, 2, 2, 7);
        assert_eq!((b.event_seq, b.open_instructions), (8, 1));
        assert_eq!(b.status, RequestStatus::InProgress);
        assert_eq!(b.closed_at, None);
    }
}
