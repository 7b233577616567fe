//! Writing the audit trail (see [`super::audit`] for what it proves):
//! new events are chained onto each request's head in memory, then the
//! completion records, the events and the request rows (their new heads,
//! with what the change moves on them) are written, in the transaction
//! that made the change.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::audit::{GENESIS, event_hash};
use super::codec::micros;
use super::events::{INSERT_EVENTS, NewEvent, SealedEvent, insert_events, select_events};
use super::sql::{Bind, Col, Sql};
use super::{Backend, StoreError};
use crate::domain::{CompletionRecord, RequestId, RequestStatus, Timestamp};

/// Encodes and chains `events` onto `heads` (each request's current head;
/// a request without one starts from [`GENESIS`]), in sequence order per
/// request; `heads` ends holding the new heads.
pub(super) fn seal(
    events: &[NewEvent<'_>],
    heads: &mut BTreeMap<RequestId, String>,
    now: Timestamp,
) -> Vec<SealedEvent> {
    let mut order: Vec<&NewEvent> = events.iter().collect();
    order.sort_by_key(|e| (e.request, e.seq));
    let occurred_at = micros(now);
    order
        .into_iter()
        .map(|e| {
            let request = e.request.to_string();
            let body = e.body();
            let prev = heads.get(&e.request).map_or(GENESIS, String::as_str);
            let hash = event_hash(prev, &request, e.seq, occurred_at, &body);
            heads.insert(e.request, hash.clone());
            SealedEvent {
                request: e.request,
                seq: e.seq,
                occurred_at,
                body,
                hash,
            }
        })
        .collect()
}

/// What a change moves on its request row besides the audit head, written
/// by the same update as the head, so that a transaction leaves one new
/// version of each request row, not two (see `after_changes`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Bump {
    /// The request's last sequence number after the change.
    pub event_seq: i64,
    /// Its instructions still open.
    pub open_instructions: i64,
    /// Its status after the change.
    pub status: RequestStatus,
    /// When it closed, if this change closed it (microseconds).
    pub closed_at: Option<i64>,
}

/// Writes one request's change and its event together: chains `event`
/// onto `head` (the request's head before it), inserts the event, and
/// writes the request row once, with the new head, the event's sequence
/// number and the change's own columns (`set`: column names and values).
/// The caller holds the row's lock.
pub(super) async fn write_one(
    conn: &mut AnyConnection,
    backend: Backend,
    event: &NewEvent<'_>,
    head: Option<String>,
    set: Vec<(&str, Bind)>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut heads = BTreeMap::new();
    if let Some(head) = head {
        heads.insert(event.request, head);
    }
    let sealed = seal(std::slice::from_ref(event), &mut heads, now);
    insert_events(conn, backend, &sealed).await?;
    let mut sql = Sql::new(backend, "update requests set audit_head = ");
    sql.bind(heads[&event.request].clone())
        .push(", event_seq = ")
        .bind(event.seq);
    for (column, value) in set {
        sql.push(&format!(", {column} = ")).bind(value);
    }
    sql.push(" where id = ").bind(event.request.to_string());
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// Writes what closes a change: chains `events` onto `heads` (as the
/// request rows held them before this transaction), seals each of
/// `records` with its request's new head, inserts the records and the
/// events, and keeps the new heads on the request rows, each with its
/// [`Bump`] (where `bumps` has one) in the same update.
pub(super) async fn write_changes(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[NewEvent<'_>],
    mut heads: BTreeMap<RequestId, String>,
    bumps: &BTreeMap<RequestId, Bump>,
    mut records: Vec<CompletionRecord>,
    now: Timestamp,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let sealed = seal(events, &mut heads, now);
    for r in &mut records {
        r.audit_head = heads.get(&r.request_id).cloned().unwrap_or_default();
    }
    insert_records(conn, backend, &records, now).await?;
    let touched: BTreeMap<&RequestId, &String> = sealed
        .iter()
        .map(|e| (&e.request, &heads[&e.request]))
        .collect();
    let mut sql = Sql::new(backend, "with h as (");
    sql.select_rows(
        &[
            ("id", Col::Text),
            ("head", Col::Text),
            ("seq", Col::Int),
            ("open", Col::Int),
            ("status", Col::Text),
            ("closed_at", Col::Int),
        ],
        touched.iter().map(|(id, head)| {
            let bump = bumps.get(*id);
            vec![
                Bind::from(id.to_string()),
                Bind::from((*head).clone()),
                Bind::from(bump.map(|b| b.event_seq)),
                Bind::from(bump.map(|b| b.open_instructions)),
                Bind::from(bump.map(|b| b.status.as_str().to_string())),
                Bind::from(bump.and_then(|b| b.closed_at)),
            ]
        }),
    );
    // Each row's new values by a lookup in `h` (a join with `h`, of
    // unknown size to the planner, hashes the whole requests table); what
    // a row has no bump for stays as it is.
    let set = "update requests set \
         (audit_head, event_seq, open_instructions, status, closed_at) = \
         (select h.head, coalesce(h.seq, requests.event_seq), \
         coalesce(h.open, requests.open_instructions), coalesce(h.status, requests.status), \
         coalesce(h.closed_at, requests.closed_at) from h where h.id = requests.id) where ";
    match backend {
        // One statement: the rows' update rides with the events' insert.
        Backend::Postgres => {
            sql.push("), u as (")
                .push(set)
                .in_cte("requests.id", "h", "id")
                .push(") ")
                .push(INSERT_EVENTS);
            select_events(&mut sql, &sealed);
            sql.query().execute(&mut *conn).await?;
        }
        Backend::Sqlite => {
            insert_events(conn, backend, &sealed).await?;
            sql.push(") ")
                .push(set)
                .push("requests.id in (select id from h)");
            sql.query().execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Inserts sealed records (their audit heads set), in one statement.
pub(super) async fn insert_records(
    conn: &mut AnyConnection,
    backend: Backend,
    records: &[CompletionRecord],
    now: Timestamp,
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        backend,
        "insert into completion_records (request_id, canonical_json, digest, created_at) ",
    );
    sql.select_rows(
        &[
            ("request_id", Col::Text),
            ("canonical_json", Col::Text),
            ("digest", Col::Text),
            ("created_at", Col::Int),
        ],
        records.iter().map(|r| {
            let canonical = r.canonical_json();
            let digest = CompletionRecord::digest_of(&canonical);
            vec![
                Bind::from(r.request_id.to_string()),
                Bind::from(String::from_utf8(canonical).expect("JSON is UTF-8")),
                Bind::from(digest),
                Bind::from(micros(now)),
            ]
        }),
    )
    // `where true`: SQLite's parser needs it before an upsert clause.
    .push(" where true on conflict (request_id) do nothing");
    let inserted = sql.query().execute(&mut *conn).await?;
    if inserted.rows_affected() != records.len() as u64 {
        // The request row locks make this unreachable; refuse rather than
        // report a second, different proof.
        return Err(StoreError::Corrupt(
            "a completion record was already written".into(),
        ));
    }
    Ok(())
}
