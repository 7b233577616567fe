//! The business's side of a request's clock: confirming receipt to the
//! person, and the one extension of the response deadline.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{OPEN, from_json, micros, opt_time, parsed, state_list, time};
use super::events::{EventKind, NewEvent};
use super::records::heads_of;
use super::sql::{Bind, Col, Sql};
use super::trail::write_trail;
use super::write_tx::WriteTx;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    Actor, DeadlinePolicy, Extension, ExtensionRefused, InstructionEvent, InstructionState,
    ProcessorSpec, RequestId, RequestStatus, RequestSummary, Timestamp, Violations, due_times,
};

impl Store {
    /// Records that the business confirmed receipt to the person.
    /// Idempotent; `FailedPrecondition` once the request is closed
    /// unconfirmed.
    pub async fn confirm_receipt(
        &self,
        id: RequestId,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<RequestSummary, StoreError> {
        let mut tx = self.begin().await?;
        let row = Sql::new(self.backend, "update requests set confirmed_at = ")
            .bind(micros(now))
            .push(", confirmed_by = ")
            .bind(actor.to_string())
            .push(", event_seq = event_seq + 1 where id = ")
            .bind(id.to_string())
            .push(&format!(
                " and confirmed_at is null and status in {OPEN} \
                 returning id, event_seq, status, audit_head"
            ))
            .query()
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            let current = self.request(id).await?;
            if current.receipt.confirmed_at.is_some() {
                return Ok(current);
            }
            return Err(StoreError::FailedPrecondition(
                "the request is closed: its answer has gone to the person".into(),
            ));
        };
        self.finish_change(tx, id, &row, EventKind::ReceiptConfirmed, actor, None, now)
            .await
    }

    /// Declares the one extension `policy` allows a request: moves its
    /// deadline (to `requested`, or the latest allowed) and its open
    /// instructions' due times with it.
    pub async fn extend_deadline(
        &self,
        id: RequestId,
        policy: &DeadlinePolicy,
        requested: Option<Timestamp>,
        reason: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<RequestSummary, StoreError> {
        let mut tx = self.begin().await?;
        // Lock order: instruction rows, then the request row.
        let open = lock_open(
            self.backend,
            "id, created_at, (select spec from processors p where p.id = processor_id) as spec",
            id,
        )
        .query()
        .fetch_all(&mut *tx)
        .await?;
        let mut req_sql = Sql::new(
            self.backend,
            "select jurisdiction, status, respond_by, extended_from from requests where id = ",
        );
        req_sql.bind(id.to_string());
        if self.backend == Backend::Postgres {
            req_sql.push(" for update");
        }
        let Some(req) = req_sql.query().fetch_optional(&mut *tx).await? else {
            return Err(StoreError::not_found("request", id));
        };
        if parsed(&req, "status", RequestStatus::parse)?.is_terminal() {
            return Err(StoreError::FailedPrecondition(
                "the request is closed".into(),
            ));
        }
        let jurisdiction = parsed(&req, "jurisdiction", |s| s.parse().ok())?;
        let original = time(&req, "respond_by")?;
        let extended = opt_time(&req, "extended_from")?.is_some();
        let new_deadline = policy
            .extend(jurisdiction, original, extended, requested, now)
            .map_err(|e| match e {
                ExtensionRefused::OutOfRange(_) => {
                    StoreError::Invalid(Violations::one("new_deadline", e.to_string()))
                }
                e => StoreError::FailedPrecondition(e.to_string()),
            })?;
        let row = Sql::new(self.backend, "update requests set respond_by = ")
            .bind(micros(new_deadline))
            .push(", extended_from = respond_by, extension_reason = ")
            .bind(reason)
            .push(", extended_by = ")
            .bind(actor.to_string())
            .push(", extended_at = ")
            .bind(micros(now))
            .push(", event_seq = event_seq + 1 where id = ")
            .bind(id.to_string())
            .push(" returning id, event_seq, status, audit_head")
            .query()
            .fetch_one(&mut *tx)
            .await?;
        if !open.is_empty() {
            let mut sql = Sql::new(self.backend, "with v as (");
            let times = open
                .iter()
                .map(|r| {
                    let spec: ProcessorSpec = from_json(r, "spec")?;
                    let (due, escalate) = due_times(
                        new_deadline,
                        spec.safety_margin,
                        spec.ack_timeout,
                        time(r, "created_at")?,
                    );
                    Ok((r.try_get::<String, _>("id")?, due, escalate))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            sql.select_rows(
                &[
                    ("id", Col::Text),
                    ("due_at", Col::Int),
                    ("escalate_at", Col::Int),
                ],
                times.iter().map(|(i, due, escalate)| {
                    vec![
                        Bind::from(i.clone()),
                        Bind::from(micros(*due)),
                        Bind::from(micros(*escalate)),
                    ]
                }),
            );
            sql.push(
                ") update instructions set due_at = v.due_at, escalate_at = v.escalate_at \
                 from v where instructions.id = v.id and ",
            )
            .in_cte("instructions.id", "v", "id");
            sql.query().execute(&mut *tx).await?;
        }
        let extension = Extension {
            original_deadline: original,
            new_deadline,
            reason: reason.to_string(),
            declared_by: actor.to_string(),
            declared_at: now,
        };
        let kind = EventKind::DeadlineExtended;
        self.finish_change(tx, id, &row, kind, actor, Some(&extension), now)
            .await
    }

    /// Ends a change to request `id` whose row update returned `row` (`id,
    /// event_seq, status, audit_head`): its event on the audit trail, the
    /// commit, the notice to watchers; returns the request as it is now.
    #[allow(clippy::too_many_arguments)]
    async fn finish_change(
        &self,
        mut tx: WriteTx,
        id: RequestId,
        row: &AnyRow,
        kind: EventKind,
        actor: &Actor,
        extension: Option<&Extension>,
        now: Timestamp,
    ) -> Result<RequestSummary, StoreError> {
        let event = NewEvent {
            request: id,
            seq: row.try_get("event_seq")?,
            kind,
            request_status: parsed(row, "status", RequestStatus::parse)?,
            instruction: None,
            actor: Some(actor),
            extension,
            note: None,
        };
        let heads = heads_of(std::slice::from_ref(row))?;
        write_trail(&mut tx, self.backend, &[event], heads, Vec::new(), now).await?;
        tx.commit().await?;
        self.announce(Effects {
            touched: vec![id],
            ..Effects::default()
        });
        self.request(id).await
    }
}

/// Selects `columns` of the request's instructions that are not final, in
/// id order, locking them on PostgreSQL (lock order everywhere:
/// instruction rows first, then the request row; SQLite's `BEGIN
/// IMMEDIATE` already serialises writers).
pub(super) fn lock_open(backend: Backend, columns: &str, id: RequestId) -> Sql {
    let mut sql = Sql::new(
        backend,
        format!("select {columns} from instructions where request_id = "),
    );
    sql.bind(id.to_string())
        .push(" and state in (")
        .push(&state_list(&InstructionState::sources(
            InstructionEvent::Cancel,
        )))
        .push(") order by id");
    if backend == Backend::Postgres {
        sql.push(" for update");
    }
    sql
}
