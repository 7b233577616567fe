//! Reading requests (one, or a filtered page) and cancelling them.

use std::collections::HashMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::aftermath::By;
use super::codec::{
    INSTRUCTION_COLUMNS, from_json, instruction, micros, opt_time, parsed, request_id, state_list,
    time,
};
use super::sql::Sql;
use super::transition::{Change, apply};
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    Actor, InstructionEvent, InstructionState, InstructionView, Jurisdiction, RequestId,
    RequestKind, RequestStatus, RequestSummary, ResolvedBy, Timestamp, Verification, Violations,
};

/// Filters of `ListRequests`; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct RequestFilter {
    /// Status.
    pub status: Option<RequestStatus>,
    /// Kind.
    pub kind: Option<RequestKind>,
    /// Regime.
    pub jurisdiction: Option<Jurisdiction>,
    /// Submitted at or after.
    pub submitted_after: Option<Timestamp>,
    /// Submitted before.
    pub submitted_before: Option<Timestamp>,
    /// Submitted by (a submitter sees only its own).
    pub submitted_by: Option<Actor>,
}

/// One page of requests.
#[derive(Debug)]
pub struct RequestPage {
    /// Newest submission first.
    pub requests: Vec<RequestSummary>,
    /// Opaque cursor of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Where a page of `ListRequests` starts: the sort key of the previous
/// page's last request, carried in an opaque page token. Decoded before
/// anything is read, so that a bad token is reported with the request's
/// other problems.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestCursor {
    submitted_at: i64,
    id: String,
}

impl RequestCursor {
    /// The cursor of a page token this server issued.
    pub fn decode(token: &str) -> Result<Self, Violations> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Violations::one("", "is not a token this server issued"))
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }
}

const REQUEST_COLUMNS: &str = "id, kind, jurisdiction, status, submitted_at, received_at, closed_at, \
    channel, requester, verification_level, verification_method, labels, identity_types, cancel_reason, \
    submitted_by";

fn decode(row: &AnyRow, instructions: Vec<InstructionView>) -> Result<RequestSummary, StoreError> {
    Ok(RequestSummary {
        id: request_id(row, "id")?,
        kind: parsed(row, "kind", |s| s.parse().ok())?,
        jurisdiction: parsed(row, "jurisdiction", |s| s.parse().ok())?,
        status: parsed(row, "status", RequestStatus::parse)?,
        submitted_at: time(row, "submitted_at")?,
        received_at: time(row, "received_at")?,
        closed_at: opt_time(row, "closed_at")?,
        channel: row.try_get("channel")?,
        requester: parsed(row, "requester", |s| s.parse().ok())?,
        verification: Verification {
            level: parsed(row, "verification_level", |s| s.parse().ok())?,
            method: row.try_get("verification_method")?,
        },
        labels: from_json(row, "labels")?,
        identity_types: from_json(row, "identity_types")?,
        cancel_reason: row.try_get("cancel_reason")?,
        submitted_by: row
            .try_get::<Option<String>, _>("submitted_by")?
            .map(|a| {
                Actor::parse(&a).map_err(|e| StoreError::Corrupt(format!("submitted_by: {e}")))
            })
            .transpose()?,
        instructions,
    })
}

impl Store {
    /// One request with its instruction lines, read in one snapshot.
    pub async fn request(&self, id: RequestId) -> Result<RequestSummary, StoreError> {
        let mut tx = self.snapshot().await?;
        let row = Sql::new(
            self.backend,
            format!("select {REQUEST_COLUMNS} from requests where id = "),
        )
        .bind(id.to_string())
        .query()
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found("request", id))?;
        let mut instructions = instructions_of_many(&mut tx, self.backend, &[id]).await?;
        tx.commit().await?;
        decode(&row, instructions.remove(&id).unwrap_or_default())
    }

    /// A page of requests, newest submission first, from `after` on. Two
    /// statements whatever the page size, in one snapshot: the requests,
    /// then all their instructions.
    pub async fn list_requests(
        &self,
        filter: &RequestFilter,
        after: Option<&RequestCursor>,
        page_size: u32,
    ) -> Result<RequestPage, StoreError> {
        let mut sql = Sql::new(
            self.backend,
            format!("select {REQUEST_COLUMNS} from requests where 1 = 1"),
        );
        if let Some(s) = filter.status {
            // A literal, like every state the store names (see `sql`).
            sql.push(&format!(" and status = '{}'", s.as_str()));
        }
        if let Some(k) = filter.kind {
            sql.push(" and kind = ").bind(k.as_str());
        }
        if let Some(j) = filter.jurisdiction {
            sql.push(" and jurisdiction = ").bind(j.as_str());
        }
        if let Some(t) = filter.submitted_after {
            sql.push(" and submitted_at >= ").bind(micros(t));
        }
        if let Some(t) = filter.submitted_before {
            sql.push(" and submitted_at < ").bind(micros(t));
        }
        if let Some(a) = &filter.submitted_by {
            sql.push(" and submitted_by = ").bind(a.to_string());
        }
        if let Some(c) = after {
            sql.push(" and (submitted_at < ")
                .bind(c.submitted_at)
                .push(" or (submitted_at = ")
                .bind(c.submitted_at)
                .push(" and id < ")
                .bind(c.id.as_str())
                .push("))");
        }
        sql.push(" order by submitted_at desc, id desc limit ")
            .bind(i64::from(page_size) + 1);
        let mut tx = self.snapshot().await?;
        let mut rows = sql.query().fetch_all(&mut *tx).await?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let ids = rows
            .iter()
            .map(|row| request_id(row, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut instructions = instructions_of_many(&mut tx, self.backend, &ids).await?;
        tx.commit().await?;
        let requests = rows
            .iter()
            .zip(&ids)
            .map(|(row, id)| decode(row, instructions.remove(id).unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match requests.last() {
            Some(last) if more => Some(
                RequestCursor {
                    submitted_at: micros(last.submitted_at),
                    id: last.id.to_string(),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(RequestPage {
            requests,
            next_page_token,
        })
    }

    /// Cancels an open request: every open instruction becomes CANCELLED and
    /// the record is written with outcome CANCELLED. Returns the request and
    /// the instructions that had reached their processor (to be notified).
    pub async fn cancel(
        &self,
        id: RequestId,
        reason: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(RequestSummary, Vec<InstructionView>), StoreError> {
        let mut tx = self.begin().await?;
        // Lock order everywhere: instruction rows first, then the request
        // row. (SQLite's BEGIN IMMEDIATE already serialises writers.)
        let mut open_sql = Sql::new(
            self.backend,
            format!("select {INSTRUCTION_COLUMNS} from instructions where request_id = "),
        );
        open_sql
            .bind(id.to_string())
            .push(" and state in (")
            .push(&state_list(&InstructionState::sources(
                InstructionEvent::Cancel,
            )))
            .push(") order by id");
        if self.backend == Backend::Postgres {
            open_sql.push(" for update");
        }
        let open: Vec<InstructionView> = open_sql
            .query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(instruction)
            .collect::<Result<_, _>>()?;
        let locked = Sql::new(self.backend, "update requests set cancel_reason = ")
            .bind(reason)
            .push(" where id = ")
            .bind(id.to_string())
            .push(" and status in ('RECEIVED', 'IN_PROGRESS') returning id")
            .query()
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            tx.rollback().await?;
            self.request_exists(id).await?;
            return Err(StoreError::FailedPrecondition(
                "the request is already finished".into(),
            ));
        }
        let changes: Vec<Change> = open
            .iter()
            .map(|i| {
                let mut c = Change::new(i.id, InstructionEvent::Cancel);
                c.resolved_by = Some(ResolvedBy::System);
                c
            })
            .collect();
        let mut effects = Effects::default();
        apply(
            &mut tx,
            self.backend,
            &changes,
            By::Actor(actor),
            now,
            &mut effects,
        )
        .await?;
        tx.commit().await?;
        self.announce(effects);
        let reached = open
            .into_iter()
            .filter(|i| i.first_instructed_at.is_some())
            .collect();
        Ok((self.request(id).await?, reached))
    }
}

/// The instructions of several requests, each request's by processor id.
async fn instructions_of_many(
    conn: &mut AnyConnection,
    backend: Backend,
    ids: &[RequestId],
) -> Result<HashMap<RequestId, Vec<InstructionView>>, StoreError> {
    let mut by_request: HashMap<RequestId, Vec<InstructionView>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_request);
    }
    let mut sql = Sql::new(
        backend,
        format!("select {INSTRUCTION_COLUMNS} from instructions where "),
    );
    sql.in_list("request_id", ids.iter().map(ToString::to_string))
        .push(" order by request_id, processor_id");
    for row in sql.query().fetch_all(&mut *conn).await? {
        let view = instruction(&row)?;
        by_request.entry(view.request_id).or_default().push(view);
    }
    Ok(by_request)
}
