//! Reading requests (one, or a filtered page) and cancelling them; the
//! receipt and the extension are in `request_clock`.

use std::collections::HashMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::aftermath::By;
use super::cancel_notices::queue_cancel_notices;
use super::codec::{
    INSTRUCTION_COLUMNS, OPEN, from_json, instruction, micros, opt_time, parsed, request_id, time,
};
use super::events::{Sent, instructions_sent};
use super::records::extension_of;
use super::request_clock::lock_open;
use super::sql::Sql;
use super::transition::{Change, apply};
use super::{Backend, Effects, Store, StoreError};
use crate::domain::lookback;
use crate::domain::{
    AccessScope, Actor, InstructionEvent, InstructionView, Jurisdiction, Receipt, RequestId,
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
    /// Open, with a response deadline before this time.
    pub due_before: Option<Timestamp>,
    /// Open and past the response deadline at this time ("now").
    pub overdue_at: Option<Timestamp>,
    /// Open and needing an operator at this time ("now"): an escalated
    /// instruction, or the receipt confirmation overdue.
    pub needs_attention_at: Option<Timestamp>,
    /// The order.
    pub order: RequestOrder,
}

/// How a page of requests is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOrder {
    /// Newest submission first.
    #[default]
    Newest,
    /// Earliest response deadline first.
    Deadline,
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
    /// The sort key: `submitted_at` (newest first) or `respond_by`
    /// (deadline order).
    #[serde(rename = "submitted_at")]
    key: i64,
    id: String,
    #[serde(default)]
    order: RequestOrder,
}

impl RequestCursor {
    /// The cursor of a page token this server issued for `order`.
    pub fn decode(token: &str, order: RequestOrder) -> Result<Self, Violations> {
        let cursor: Self = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Violations::one("", "is not a token this server issued"))?;
        if cursor.order != order {
            return Err(Violations::one(
                "",
                "was issued for another order_by; start again without a token",
            ));
        }
        Ok(cursor)
    }

    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).expect("a cursor serialises"))
    }
}

const REQUEST_COLUMNS: &str = "id, kind, jurisdiction, status, submitted_at, received_at, closed_at, \
    channel, requester, verification_level, verification_method, labels, identity_types, cancel_reason, \
    submitted_by, access_scope, requester_evidence, confirm_by, confirmed_at, confirmed_by, \
    respond_by, extended_from, extension_reason, extended_by, extended_at, denied, \
    identities_erased_at, lookback_start";

fn decode(row: &AnyRow, instructions: Vec<InstructionView>) -> Result<RequestSummary, StoreError> {
    let kind = parsed(row, "kind", |s| s.parse().ok())?;
    let jurisdiction = parsed(row, "jurisdiction", |s| s.parse().ok())?;
    let submitted_at = time(row, "submitted_at")?;
    Ok(RequestSummary {
        id: request_id(row, "id")?,
        kind,
        jurisdiction,
        status: parsed(row, "status", RequestStatus::parse)?,
        submitted_at,
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
        access_scope: row
            .try_get::<Option<String>, _>("access_scope")?
            .and_then(|s| AccessScope::parse(&s)),
        requester_evidence: row.try_get("requester_evidence")?,
        lookback_start: lookback::in_force(
            kind,
            jurisdiction,
            submitted_at,
            opt_time(row, "lookback_start")?,
        ),
        receipt: Receipt {
            confirm_by: opt_time(row, "confirm_by")?,
            confirmed_at: opt_time(row, "confirmed_at")?,
            confirmed_by: row.try_get("confirmed_by")?,
        },
        respond_by: time(row, "respond_by")?,
        extension: extension_of(row)?,
        denied_unverified: row.try_get::<Option<String>, _>("denied")?.is_some(),
        identities_erased_at: opt_time(row, "identities_erased_at")?,
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
        if let Some(t) = filter.due_before {
            sql.push(&format!(" and status in {OPEN} and respond_by < "))
                .bind(micros(t));
        }
        if let Some(now) = filter.overdue_at {
            sql.push(&format!(" and status in {OPEN} and respond_by < "))
                .bind(micros(now));
        }
        if let Some(now) = filter.needs_attention_at {
            sql.push(&format!(
                " and status in {OPEN} and (exists (select 1 from instructions i \
                 where i.request_id = requests.id and i.state = 'ESCALATED') \
                 or (confirmed_at is null and confirm_by < "
            ))
            .bind(micros(now))
            .push("))");
        }
        let (key, cmp, dir) = match filter.order {
            RequestOrder::Newest => ("submitted_at", "<", "desc"),
            RequestOrder::Deadline => ("respond_by", ">", "asc"),
        };
        if let Some(c) = after {
            sql.push(&format!(" and ({key} {cmp} "))
                .bind(c.key)
                .push(&format!(" or ({key} = "))
                .bind(c.key)
                .push(&format!(" and id {cmp} "))
                .bind(c.id.as_str())
                .push("))");
        }
        sql.push(&format!(" order by {key} {dir}, id {dir}"))
            .limit(i64::from(page_size) + 1);
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
                    key: micros(match filter.order {
                        RequestOrder::Newest => last.submitted_at,
                        RequestOrder::Deadline => last.respond_by,
                    }),
                    id: last.id.to_string(),
                    order: filter.order,
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
    ) -> Result<(RequestSummary, usize), StoreError> {
        let mut tx = self.begin().await?;
        // Lock order everywhere: instruction rows first, then the request
        // row. (SQLite's BEGIN IMMEDIATE already serialises writers.)
        let open: Vec<InstructionView> = lock_open(self.backend, INSTRUCTION_COLUMNS, id)
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
        // Which instructions were sent: the request row is locked, so a
        // claim's history either committed before (its DELIVERING events
        // are read here) or waits, finds them cancelled and sends nothing.
        // One leased but never sent keeps no first delivery time and gets
        // no notice. If the history does not read, every instruction with
        // a first delivery time counts as sent.
        let sent = if open.iter().any(|i| i.first_instructed_at.is_some()) {
            instructions_sent(&mut tx, self.backend, &[id]).await?
        } else {
            Sent::default()
        };
        let was_sent =
            |i: &InstructionView| i.first_instructed_at.is_some() && !sent.never(i.id, id);
        let changes: Vec<Change> = open
            .iter()
            .map(|i| {
                let mut c = Change::new(i.id, InstructionEvent::Cancel);
                c.resolved_by = Some(ResolvedBy::System);
                c.unsent = i.first_instructed_at.is_some() && !was_sent(i);
                c
            })
            .collect();
        let mut effects = Effects::default();
        apply(
            &mut tx,
            self.backend,
            &self.keys,
            &changes,
            By::Actor(actor),
            now,
            &mut effects,
        )
        .await?;
        // Every processor that had received an instruction is told, from
        // this commit on, by the dispatcher or with its next pull.
        let reached: Vec<String> = open
            .iter()
            .filter(|i| was_sent(i))
            .map(|i| i.id.to_string())
            .collect();
        let notices = queue_cancel_notices(&mut tx, self.backend, reached, reason, now).await?;
        effects.new_work |= notices > 0;
        tx.commit().await?;
        self.announce(effects);
        Ok((self.request(id).await?, notices))
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
