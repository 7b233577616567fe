//! Intake: a request and all its instructions are written in one
//! transaction before `SubmitRequest` answers, so an acknowledged request is
//! never lost and never half-fanned-out. The fan-out is decided here: the
//! named processors, or every active one that handles the kind and accepts
//! one of the subject's identity types; each instruction carries only the
//! identities its processor accepts.

use sqlx::Row;

use super::codec::{json, micros};
use super::events::{EventKind, NewEvent, append_events};
use super::records::write_records;
use super::sql::{Bind, Sql};
use super::{Effects, Store, StoreError};
use crate::domain::{
    AdapterConfig, InstructionId, InstructionState, InstructionView, NewRequest, Processor,
    ProcessorStatus, RequestStatus, RequestSummary, Timestamp, Violations,
};

/// What intake did.
#[derive(Debug)]
pub struct Intake {
    /// The request as stored.
    pub request: RequestSummary,
    /// False when this was an idempotent repeat of an earlier submission.
    pub created: bool,
}

/// Chooses the processors a request fans out to.
fn fan_out<'a>(
    req: &NewRequest,
    processors: &'a [Processor],
) -> Result<Vec<&'a Processor>, Violations> {
    let types = req.subject.types();
    if req.processor_ids.is_empty() {
        return Ok(processors
            .iter()
            .filter(|p| p.status == ProcessorStatus::Active && p.spec.can_take(req.kind, &types))
            .collect());
    }
    let mut v = Violations::new();
    let mut chosen = Vec::new();
    for (i, id) in req.processor_ids.iter().enumerate() {
        let field = format!("processor_ids[{i}]");
        match processors.iter().find(|p| &p.spec.id == id) {
            None => v.add(field, "no processor with this id is registered"),
            Some(p) if p.status != ProcessorStatus::Active => {
                v.add(field, "the processor is disabled")
            }
            Some(p) if !p.spec.supported_kinds.contains(&req.kind) => v.add(
                field,
                format!("the processor does not handle {} requests", req.kind),
            ),
            Some(p) if !p.spec.can_take(req.kind, &types) => v.add(
                field,
                "the processor accepts none of the subject's identity types",
            ),
            Some(p) => chosen.push(p),
        }
    }
    v.finish(|| chosen)
}

impl Store {
    /// Takes a request in (idempotently on its id). `trace_context` is the
    /// submitting call's W3C `traceparent`, kept with each instruction so
    /// that its deliveries join that trace.
    #[tracing::instrument(name = "store.submit", skip_all, fields(request_id = %req.id))]
    pub async fn submit(
        &self,
        req: &NewRequest,
        now: Timestamp,
        trace_context: Option<&str>,
    ) -> Result<Intake, StoreError> {
        let processors = self.all_processors().await?;
        let targets = fan_out(req, &processors).map_err(StoreError::Invalid)?;
        let id = req.id.to_string();
        let fingerprint = req.fingerprint();
        let submitted_at = req.submitted_at.unwrap_or(now);
        let mut tx = self.begin().await?;
        let inserted = Sql::new(
            "insert into requests (id, kind, jurisdiction, status, submitted_at, received_at, \
             channel, requester, verification_level, verification_method, labels, identity_types, \
             subject, fingerprint, open_instructions, event_seq) values (",
        )
        .bind(id.clone())
        .push(", ")
        .bind(req.kind.as_str())
        .push(", ")
        .bind(req.jurisdiction.as_str())
        .push(", 'RECEIVED', ")
        .bind(micros(submitted_at))
        .push(", ")
        .bind(micros(now))
        .push(", ")
        .bind(req.channel.as_str())
        .push(", ")
        .bind(req.requester.as_str())
        .push(", ")
        .bind(req.verification.level.as_str())
        .push(", ")
        .bind(req.verification.method.as_str())
        .push(", ")
        .bind(json(&req.labels))
        .push(", ")
        .bind(json(&req.subject.types()))
        .push(", ")
        .bind(json(&req.subject))
        .push(", ")
        .bind(fingerprint.clone())
        .push(", ")
        .bind(targets.len() as i64)
        .push(", 1) on conflict (id) do nothing")
        .query()
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let row = Sql::new("select fingerprint from requests where id = ")
                .bind(id)
                .query()
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            let existing: String = row.try_get("fingerprint")?;
            if existing != fingerprint {
                return Err(StoreError::AlreadyExists(format!(
                    "request {} already exists with different content",
                    req.id
                )));
            }
            return Ok(Intake {
                request: self.request(req.id).await?,
                created: false,
            });
        }
        let instructions: Vec<InstructionView> = targets
            .iter()
            .map(|p| InstructionView {
                id: InstructionId::new(),
                request_id: req.id,
                processor_id: p.spec.id.clone(),
                kind: req.kind,
                jurisdiction: req.jurisdiction,
                submitted_at,
                state: InstructionState::Pending,
                attempts: 0,
                attempts_since_arm: 0,
                reminders: 0,
                last_error: None,
                created_at: now,
                first_instructed_at: None,
                acknowledged_at: None,
                resolved_at: None,
                // Manual instructions wait for an operator, never for a
                // dispatcher.
                next_attempt_at: (p.spec.adapter != AdapterConfig::Manual).then_some(now),
                lease_expires_at: None,
                reply_due_at: None,
                result: None,
                resolved_by: None,
            })
            .collect();
        if !instructions.is_empty() {
            let mut sql = Sql::new(
                "insert into instructions (id, request_id, processor_id, kind, jurisdiction, \
                 submitted_at, state, payload, next_attempt_at, created_at, trace_context) values ",
            );
            sql.rows(instructions.iter().zip(&targets).map(|(i, p)| {
                let payload = req.subject.restricted_to(&p.spec.accepted_identity_types);
                vec![
                    Bind::from(i.id.to_string()),
                    Bind::from(id.clone()),
                    Bind::from(i.processor_id.as_str()),
                    Bind::from(req.kind.as_str()),
                    Bind::from(req.jurisdiction.as_str()),
                    Bind::from(micros(submitted_at)),
                    Bind::from("PENDING"),
                    Bind::from(json(&payload)),
                    Bind::from(i.next_attempt_at.map(micros)),
                    Bind::from(micros(now)),
                    Bind::from(trace_context.map(str::to_string)),
                ]
            }));
            sql.query().execute(&mut *tx).await?;
        }
        let received = NewEvent {
            request: req.id,
            seq: 1,
            kind: EventKind::Received,
            request_status: RequestStatus::Received,
            instruction: None,
        };
        append_events(&mut tx, &[received], now).await?;
        let mut effects = Effects {
            touched: vec![req.id],
            new_work: !instructions.is_empty(),
            ..Effects::default()
        };
        if instructions.is_empty() {
            write_records(&mut tx, &[req.id], now, &mut effects).await?;
        }
        tx.commit().await?;
        self.announce(effects).await;
        // What was just written, without reading it back; a request that
        // matched nothing was closed in the same transaction.
        let request = if instructions.is_empty() {
            self.request(req.id).await?
        } else {
            RequestSummary {
                id: req.id,
                kind: req.kind,
                jurisdiction: req.jurisdiction,
                status: RequestStatus::Received,
                submitted_at,
                received_at: now,
                closed_at: None,
                channel: req.channel.as_str().to_string(),
                requester: req.requester,
                verification: req.verification.clone(),
                labels: req.labels.clone(),
                identity_types: req.subject.types(),
                cancel_reason: None,
                instructions: sorted_by_processor(instructions),
            }
        };
        Ok(Intake {
            request,
            created: true,
        })
    }
}

fn sorted_by_processor(mut instructions: Vec<InstructionView>) -> Vec<InstructionView> {
    instructions.sort_by(|a, b| a.processor_id.cmp(&b.processor_id));
    instructions
}
