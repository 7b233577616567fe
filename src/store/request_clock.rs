//! The business's side of a request's clock: confirming receipt to the
//! person, and the one extension of the response deadline.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{count, from_json, micros, opt_time, parsed, request_id, state_list, time};
use super::events::{EventKind, NewEvent};
use super::sql::{Bind, Col, Sql};
use super::trail::write_one;
use super::write_tx::WriteTx;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    Actor, DeadlinePolicy, Extension, ExtensionRefused, InstructionEvent, InstructionState,
    ProcessorSpec, RequestId, RequestStatus, RequestSummary, Timestamp, Violations, due_times,
    reply_due_extended,
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
        let mut sql = Sql::new(
            self.backend,
            "select id, event_seq, status, audit_head, confirmed_at from requests where id = ",
        );
        sql.bind(id.to_string());
        if self.backend == Backend::Postgres {
            sql.push(" for update");
        }
        let Some(row) = sql.query().fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Err(StoreError::not_found("request", id));
        };
        if opt_time(&row, "confirmed_at")?.is_some() {
            tx.rollback().await?;
            return self.request(id).await;
        }
        if parsed(&row, "status", RequestStatus::parse)?.is_terminal() {
            tx.rollback().await?;
            return Err(StoreError::FailedPrecondition(
                "the request is closed: its answer has gone to the person".into(),
            ));
        }
        let set = vec![
            ("confirmed_at", Bind::from(micros(now))),
            ("confirmed_by", Bind::from(actor.to_string())),
        ];
        let kind = EventKind::ReceiptConfirmed;
        self.finish_change(tx, &row, kind, actor, None, set, now)
            .await
    }

    /// Declares the one extension `policy` allows a request: moves its
    /// deadline (to `requested`, or the latest allowed) and its open
    /// instructions' due times with it, and the reply times that the old
    /// due times capped (see [`reply_due_extended`]).
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
            "id, created_at, due_at, reply_due_at, acknowledged_at, reminders, \
             attempts, attempts_since_arm, \
             (select spec from processors p where p.id = processor_id) as spec",
            id,
        )
        .query()
        .fetch_all(&mut *tx)
        .await?;
        let mut req_sql = Sql::new(
            self.backend,
            "select id, jurisdiction, status, respond_by, extended_from, event_seq, audit_head \
             from requests where id = ",
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
                    let reply = extended_reply(r, &spec, due, now)?;
                    Ok((r.try_get::<String, _>("id")?, due, escalate, reply))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            sql.select_rows(
                &[
                    ("id", Col::Text),
                    ("due_at", Col::Int),
                    ("escalate_at", Col::Int),
                    ("reply_due_at", Col::Int),
                ],
                times.iter().map(|(i, due, escalate, reply)| {
                    vec![
                        Bind::from(i.clone()),
                        Bind::from(micros(*due)),
                        Bind::from(micros(*escalate)),
                        Bind::from(reply.map(micros)),
                    ]
                }),
            );
            sql.push(
                ") update instructions set due_at = v.due_at, escalate_at = v.escalate_at, \
                 reply_due_at = coalesce(v.reply_due_at, instructions.reply_due_at) \
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
        let set = vec![
            ("respond_by", Bind::from(micros(new_deadline))),
            ("extended_from", Bind::from(micros(original))),
            ("extension_reason", Bind::from(reason)),
            ("extended_by", Bind::from(actor.to_string())),
            ("extended_at", Bind::from(micros(now))),
        ];
        let kind = EventKind::DeadlineExtended;
        self.finish_change(tx, &req, kind, actor, Some(&extension), set, now)
            .await
    }

    /// Ends a change to the request whose row, read under its lock, is
    /// `row` (`id, event_seq, status, audit_head`): its event on the audit
    /// trail and the row's one update (the change's columns, `set`, with
    /// the new head), the commit, the notice to watchers; returns the
    /// request as it is now.
    #[allow(clippy::too_many_arguments)]
    async fn finish_change(
        &self,
        mut tx: WriteTx,
        row: &AnyRow,
        kind: EventKind,
        actor: &Actor,
        extension: Option<&Extension>,
        set: Vec<(&str, Bind)>,
        now: Timestamp,
    ) -> Result<RequestSummary, StoreError> {
        let id = request_id(row, "id")?;
        let event = NewEvent {
            request: id,
            seq: row.try_get::<i64, _>("event_seq")? + 1,
            kind,
            request_status: parsed(row, "status", RequestStatus::parse)?,
            instruction: None,
            actor: Some(actor),
            extension,
            note: None,
        };
        let head = row.try_get::<Option<String>, _>("audit_head")?;
        write_one(&mut tx, self.backend, &event, head, set, now).await?;
        tx.commit().await?;
        self.announce(Effects {
            touched: vec![id],
            ..Effects::default()
        });
        self.request(id).await
    }
}

/// The reply time of the open instruction `row` (read by
/// `extend_deadline`) once the extension moves its due time to `due`, if
/// it moves (see [`reply_due_extended`]). Only an acknowledged instruction
/// has a reply time. Its first acknowledgement is the acceptance that set
/// it unless a reminder went out since, or the instruction was re-armed
/// (or given an attempt back), which sets its two attempt counts apart.
fn extended_reply(
    row: &AnyRow,
    spec: &ProcessorSpec,
    due: Timestamp,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let Some(reply) = opt_time(row, "reply_due_at")? else {
        return Ok(None);
    };
    let only = count(row, "reminders")? == 0
        && count(row, "attempts")? == count(row, "attempts_since_arm")?;
    let accepted = opt_time(row, "acknowledged_at")?.filter(|_| only);
    Ok(reply_due_extended(
        reply,
        time(row, "due_at")?,
        due,
        accepted,
        spec.reply_wait(),
        now,
    ))
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
