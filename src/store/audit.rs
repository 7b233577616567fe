//! The audit trail: each request's events form a hash chain. An event
//! stores its hash, the SHA-256 of
//!
//! ```text
//! previous hash \n request id \n sequence \n occurred_at (µs) \n body
//! ```
//!
//! where the body is the event's JSON exactly as stored and the previous
//! hash is the stored hash of the event before it (64 zeros for the
//! first). The previous hash is read from that event rather than stored
//! again: a second copy proves nothing the recomputation does not (a
//! verifier chains every hash from the first event on), and every event
//! would write it to the log once more. Rows that keep a copy
//! (`prev_hash`) must match the event before. The request row
//! keeps the hash of its last event (`audit_head`), and the completion
//! record, written with the last event, carries that head, so the record's
//! digest covers the whole history: an event edited, removed or inserted
//! afterwards breaks a link, a hash, the head, or the digest, and
//! [`Store::verify_trail`] says which, and where first.
//!
//! The chain is computed where the events are written, in the same
//! transaction: the previous head comes from the request row as read under
//! its lock, and the new heads are written by one update of the request
//! rows, which also carries what the change moves on them (a `Bump`, or a
//! single request's changed columns); on PostgreSQL a batch's update rides
//! with the events' insert (on SQLite, one more statement).
//! The writing side is [`super::trail`].

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::sql::{Bind, Col, Sql};
use super::{Store, StoreError};
use crate::domain::{CompletionRecord, RequestId};

/// The previous hash of a request's first event.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of one event (see the module documentation).
pub(super) fn event_hash(
    prev: &str,
    request: &str,
    seq: i64,
    occurred_at: i64,
    body: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [prev, request, &seq.to_string(), &occurred_at.to_string()] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Whether an event's stored body is a request's closing event.
fn closes(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .is_some_and(|k| k == "Completed" || k == "Cancelled")
}

/// What [`Store::verify_trail`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailCheck {
    /// Events checked.
    pub events: u64,
    /// The hash of the last event, as recomputed.
    pub head: String,
    /// The first break: the event's sequence number (0 for the head or
    /// the record) and what fails.
    pub first_break: Option<(u64, String)>,
    /// Whether a completion record was checked.
    pub record_checked: bool,
}

impl Store {
    /// Recomputes a request's chain, its head and its record's digest, in
    /// one snapshot, and reports the first break.
    pub async fn verify_trail(&self, id: RequestId) -> Result<TrailCheck, StoreError> {
        let mut tx = self.snapshot().await?;
        let head: Option<String> =
            Sql::new(self.backend, "select audit_head from requests where id = ")
                .bind(id.to_string())
                .query()
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::not_found("request", id))?
                .try_get("audit_head")?;
        let events = Sql::new(
            self.backend,
            "select seq, occurred_at, body, prev_hash, hash from request_events where request_id = ",
        )
        .bind(id.to_string())
        .push(" order by seq")
        .query()
        .fetch_all(&mut *tx)
        .await?;
        let record = Sql::new(
            self.backend,
            "select canonical_json, digest from completion_records where request_id = ",
        )
        .bind(id.to_string())
        .query()
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;

        let request = id.to_string();
        let mut first_break = None;
        let mut note = |seq: u64, problem: &str| {
            if first_break.is_none() {
                first_break = Some((seq, problem.to_string()));
            }
        };
        let mut prev = GENESIS.to_string();
        let mut recomputed_head = GENESIS.to_string();
        // The record covers the trail up to the request's last event as
        // it closed; events after it (a suppression removed) go on from
        // there.
        let mut closing = None;
        for (i, row) in events.iter().enumerate() {
            let seq: i64 = row.try_get("seq")?;
            let expected = i as u64 + 1;
            if seq as u64 != expected {
                note(expected, "the event is missing");
            }
            let kept_prev: Option<String> = row.try_get("prev_hash")?;
            let stored: Option<String> = row.try_get("hash")?;
            let Some(stored) = stored else {
                note(seq as u64, "the event has no hash");
                continue;
            };
            if kept_prev.is_some_and(|kept| kept != prev) {
                note(seq as u64, "the event does not link to the one before it");
            }
            let body: String = row.try_get("body")?;
            let occurred_at: i64 = row.try_get("occurred_at")?;
            let hash = event_hash(&prev, &request, seq, occurred_at, &body);
            if hash != stored {
                note(seq as u64, "the event's hash does not match its content");
            }
            recomputed_head = hash;
            if closes(&body) {
                closing = Some(stored.clone());
            }
            prev = stored;
        }
        if head.as_deref() != Some(prev.as_str()) {
            note(
                0,
                "the head kept with the request is not the last event's hash",
            );
        }
        let record_checked = record.is_some();
        if let Some(row) = record {
            let bytes: String = row.try_get("canonical_json")?;
            let digest: String = row.try_get("digest")?;
            if CompletionRecord::digest_of(bytes.as_bytes()) != digest {
                note(0, "the record's digest does not match its content");
            }
            match serde_json::from_str::<CompletionRecord>(&bytes) {
                Ok(r) if r.audit_head.is_empty() || Some(&r.audit_head) == closing.as_ref() => {}
                Ok(_) => note(0, "the record does not cover the trail's head"),
                Err(_) => note(0, "the record cannot be read"),
            }
        }
        Ok(TrailCheck {
            events: events.len() as u64,
            head: recomputed_head,
            first_break,
            record_checked,
        })
    }

    /// Chains the histories of requests recorded before events were
    /// chained (their rows have no head), in batches; returns how many
    /// requests it chained. A no-op once every request has a head.
    pub async fn chain_unchained(&self) -> Result<usize, StoreError> {
        let mut chained = 0;
        loop {
            let mut tx = self.begin().await?;
            let ids = Sql::new(
                self.backend,
                "select id from requests where audit_head is null order by id limit 200",
            )
            .query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| super::codec::request_id(r, "id"))
            .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                tx.rollback().await?;
                return Ok(chained);
            }
            let mut sql = Sql::new(
                self.backend,
                "select request_id, seq, occurred_at, body from request_events where ",
            );
            sql.in_list("request_id", ids.iter().map(ToString::to_string))
                .push(" order by request_id, seq");
            let rows = sql.query().fetch_all(&mut *tx).await?;
            let mut heads: BTreeMap<String, String> = BTreeMap::new();
            let mut links = Vec::with_capacity(rows.len());
            for row in &rows {
                let request: String = row.try_get("request_id")?;
                let seq: i64 = row.try_get("seq")?;
                let occurred_at: i64 = row.try_get("occurred_at")?;
                let body: String = row.try_get("body")?;
                let prev = heads
                    .get(&request)
                    .cloned()
                    .unwrap_or_else(|| GENESIS.to_string());
                let hash = event_hash(&prev, &request, seq, occurred_at, &body);
                heads.insert(request.clone(), hash.clone());
                links.push((request, seq, hash));
            }
            for chunk in links.chunks(500) {
                let mut sql = Sql::new(self.backend, "with v as (");
                sql.select_rows(
                    &[
                        ("request_id", Col::Text),
                        ("seq", Col::Int),
                        ("hash", Col::Text),
                    ],
                    chunk.iter().map(|(r, seq, hash)| {
                        vec![
                            Bind::from(r.clone()),
                            Bind::from(*seq),
                            Bind::from(hash.clone()),
                        ]
                    }),
                );
                sql.push(
                    ") update request_events set hash = v.hash \
                     from v where request_events.request_id = v.request_id \
                     and request_events.seq = v.seq",
                );
                sql.query().execute(&mut *tx).await?;
            }
            let mut sql = Sql::new(self.backend, "with v as (");
            sql.select_rows(
                &[("id", Col::Text), ("head", Col::Text)],
                ids.iter().map(|id| {
                    let id = id.to_string();
                    let head = heads
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| GENESIS.to_string());
                    vec![Bind::from(id), Bind::from(head)]
                }),
            );
            sql.push(") update requests set audit_head = v.head from v where requests.id = v.id");
            sql.query().execute(&mut *tx).await?;
            tx.commit().await?;
            chained += ids.len();
        }
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
