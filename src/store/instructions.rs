//! Changing and reading single instructions: the dispatcher's delivery
//! results (fenced by lease), the processors' callbacks (acknowledge,
//! complete), the operators' re-arm and resolve, and the listings.

use sqlx::Row;

use super::aftermath::By;
use super::codec::{INSTRUCTION_COLUMNS, instruction, micros, state_list};
use super::sql::Sql;
use super::transition::{AttemptClose, Change, apply};
use super::{Effects, Store, StoreError};
use crate::domain::{
    Actor, AttemptResult, InstructionEvent, InstructionId, InstructionResult, InstructionState,
    InstructionView, ProcessorId, RequestId, ResolvedBy, SubjectIdentity, Timestamp, Violations,
};

/// Filters of `ListInstructions`.
#[derive(Clone, Debug, Default)]
pub struct InstructionFilter {
    /// State.
    pub state: Option<InstructionState>,
    /// Processor.
    pub processor: Option<ProcessorId>,
    /// Request.
    pub request: Option<RequestId>,
    /// Open, due before this time.
    pub due_before: Option<Timestamp>,
    /// Open and past its due time at this time ("now").
    pub overdue_at: Option<Timestamp>,
    /// Escalated: waiting for an operator.
    pub needs_attention: bool,
    /// The order.
    pub order: InstructionOrder,
}

/// How a page of instructions is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstructionOrder {
    /// Oldest first (ids are time-ordered).
    #[default]
    Created,
    /// Earliest due time first.
    Due,
}

/// Where a page of `ListInstructions` starts: after this instruction, or
/// after this (due time, instruction) in due order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstructionCursor {
    /// Oldest-first order.
    Created(InstructionId),
    /// Due order.
    Due(i64, InstructionId),
}

impl InstructionCursor {
    /// Reads a key this store issued for `order`.
    pub fn parse(key: &str, order: InstructionOrder) -> Result<Self, Violations> {
        let bad = || Violations::one("", "is not a token this server issued for this order_by");
        match (order, key.strip_prefix("due:")) {
            (InstructionOrder::Created, None) => InstructionId::parse(key)
                .map(Self::Created)
                .map_err(|_| bad()),
            (InstructionOrder::Due, Some(rest)) => {
                let (due, id) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Self::Due(
                    due.parse().map_err(|_| bad())?,
                    InstructionId::parse(id).map_err(|_| bad())?,
                ))
            }
            _ => Err(bad()),
        }
    }

    /// The key, for a page token.
    pub fn key(&self) -> String {
        match self {
            Self::Created(id) => id.to_string(),
            Self::Due(due, id) => format!("due:{due}:{id}"),
        }
    }
}

/// One page of instructions.
#[derive(Debug)]
pub struct InstructionPage {
    /// The instructions.
    pub instructions: Vec<InstructionView>,
    /// Where the next page starts, when more follow.
    pub next: Option<InstructionCursor>,
}

/// Instruction states that are not terminal, for SQL.
const NOT_FINAL: &str = "('PENDING', 'DELIVERING', 'ACKNOWLEDGED', 'ESCALATED')";

impl Store {
    /// Applies one change in its own transaction; `None` if its guard did
    /// not match.
    async fn change_one(
        &self,
        change: Change,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Option<InstructionView>, StoreError> {
        let mut tx = self.begin().await?;
        let mut effects = Effects {
            new_work: change.event == InstructionEvent::Rearm,
            ..Effects::default()
        };
        let changed = apply(
            &mut tx,
            self.backend,
            &self.keys,
            std::slice::from_ref(&change),
            By::Actor(actor),
            now,
            &mut effects,
        )
        .await?;
        tx.commit().await?;
        self.announce(effects);
        Ok(changed.into_iter().next())
    }

    /// One instruction.
    pub async fn instruction(&self, id: InstructionId) -> Result<InstructionView, StoreError> {
        let row = Sql::new(
            self.backend,
            format!("select {INSTRUCTION_COLUMNS} from instructions where id = "),
        )
        .bind(id.to_string())
        .query()
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("instruction", id))?;
        instruction(&row)
    }

    /// The identities an instruction carries to its processor (personal
    /// data: to be kept out of what the processor sends back).
    pub async fn sent_identities(
        &self,
        id: InstructionId,
    ) -> Result<Vec<SubjectIdentity>, StoreError> {
        let row = Sql::new(
            self.backend,
            "select i.payload as payload, i.request_id as request_id, r.subject as subject \
             from instructions i join requests r on r.id = i.request_id where i.id = ",
        )
        .bind(id.to_string())
        .query()
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("instruction", id))?;
        // A final instruction's payload is gone; its request's subject (all
        // the identities, a superset) stays until the request is erased.
        match (
            row.try_get::<Option<String>, _>("payload")?,
            row.try_get::<Option<String>, _>("subject")?,
        ) {
            (Some(text), _) => self.open_json(&text, super::sealed::PAYLOAD, id),
            (None, Some(text)) => {
                let request: String = row.try_get("request_id")?;
                let subject: crate::domain::Subject =
                    self.open_json(&text, super::sealed::SUBJECT, request)?;
                Ok(subject.identities().to_vec())
            }
            (None, None) => Ok(Vec::new()),
        }
    }

    /// A processor acknowledges: its outcome is then due by `reply_due_at`.
    /// Repeats (and acknowledgements of finished instructions) change
    /// nothing.
    pub async fn acknowledge(
        &self,
        id: InstructionId,
        reply_due_at: Timestamp,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let current = self.instruction(id).await?;
        if current.state == InstructionState::Acknowledged || current.state.is_terminal() {
            return Ok(current);
        }
        let mut change = Change::new(id, InstructionEvent::Acknowledge);
        change.reply_due_at = Some(reply_due_at);
        change.acknowledged_at = Some(now);
        change.close_attempt = Some(AttemptClose {
            result: AttemptResult::Accepted,
            code: None,
            message: None,
        });
        match self.change_one(change, actor, now).await? {
            Some(v) => Ok(v),
            // Raced with another change; report what is there now.
            None => self.instruction(id).await,
        }
    }

    /// Records a final result. Repeating the same result is a no-op (an
    /// operator's, only with the same note); a different one after the
    /// first is `FailedPrecondition`.
    pub async fn resolve(
        &self,
        id: InstructionId,
        result: &InstructionResult,
        by: ResolvedBy,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let mut change = Change::new(id, InstructionEvent::Resolve(result.outcome));
        change.result = Some(result.clone());
        change.resolved_by = Some(by.clone());
        change.close_attempt = Some(AttemptClose {
            result: AttemptResult::Outcome,
            code: None,
            message: None,
        });
        let change = self.sealing_records(change);
        match self.change_one(change, actor, now).await? {
            Some(v) => Ok(v),
            None => {
                let current = self.instruction(id).await?;
                // The same answer again is a retry, answered with the
                // instruction as it is: from the processor, whoever
                // recorded it (its answer agrees with what stands); from
                // an operator, only with the same note, or the note would
                // be dropped unsaid (which operator is not compared: the
                // same note from another changes nothing either).
                let same_answerer =
                    by == ResolvedBy::Processor || current.resolved_by.as_ref() == Some(&by);
                // Records are kept apart from the stored result: compare
                // the rest, and how many.
                let (answer, records) = result.clone().split_records();
                let chunked = if current.kind.returns_data() {
                    self.chunk_totals(id).await?.records
                } else {
                    0
                };
                match &current.result {
                    Some(r)
                        if same_answerer
                            && r.same_answer(&answer)
                            && u64::from(current.data_records)
                                == records.len() as u64 + chunked =>
                    {
                        Ok(current)
                    }
                    _ => Err(StoreError::FailedPrecondition(format!(
                        "the instruction is already {}",
                        current.state.as_str()
                    ))),
                }
            }
        }
    }

    /// Re-arms an escalated instruction with a fresh retry budget.
    pub async fn rearm(
        &self,
        id: InstructionId,
        push_or_pull: bool,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let mut change = Change::new(id, InstructionEvent::Rearm);
        change.next_attempt_at = push_or_pull.then_some(now);
        change.rearm = true;
        match self.change_one(change, actor, now).await? {
            Some(v) => Ok(v),
            None => {
                let current = self.instruction(id).await?;
                Err(StoreError::FailedPrecondition(format!(
                    "only ESCALATED instructions can be retried; this one is {}",
                    current.state.as_str()
                )))
            }
        }
    }

    /// A page of instructions, oldest (by id, which is time-ordered)
    /// first, or by due time.
    pub async fn list_instructions(
        &self,
        filter: &InstructionFilter,
        after: Option<&InstructionCursor>,
        limit: u32,
    ) -> Result<InstructionPage, StoreError> {
        let mut sql = Sql::new(
            self.backend,
            format!("select {INSTRUCTION_COLUMNS} from instructions where 1 = 1"),
        );
        if let Some(s) = filter.state {
            sql.push(" and state in (")
                .push(&state_list(&[s]))
                .push(")");
        }
        if let Some(p) = &filter.processor {
            sql.push(" and processor_id = ").bind(p.as_str());
        }
        if let Some(r) = filter.request {
            sql.push(" and request_id = ").bind(r.to_string());
        }
        if let Some(t) = filter.due_before {
            sql.push(&format!(" and state in {NOT_FINAL} and due_at < "))
                .bind(micros(t));
        }
        if let Some(now) = filter.overdue_at {
            sql.push(&format!(" and state in {NOT_FINAL} and due_at < "))
                .bind(micros(now));
        }
        if filter.needs_attention {
            sql.push(" and state = 'ESCALATED'");
        }
        match after {
            Some(InstructionCursor::Created(a)) => {
                sql.push(" and id > ").bind(a.to_string());
            }
            Some(InstructionCursor::Due(due, a)) => {
                sql.push(" and (due_at > ")
                    .bind(*due)
                    .push(" or (due_at = ")
                    .bind(*due)
                    .push(" and id > ")
                    .bind(a.to_string())
                    .push("))");
            }
            None => {}
        }
        match filter.order {
            InstructionOrder::Created => sql.push(" order by id"),
            InstructionOrder::Due => sql.push(" order by due_at, id"),
        };
        sql.limit(i64::from(limit) + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let instructions: Vec<_> = rows
            .iter()
            .take(limit as usize)
            .map(instruction)
            .collect::<Result<_, _>>()?;
        let next = match instructions.last() {
            Some(last) if more => Some(match filter.order {
                InstructionOrder::Created => InstructionCursor::Created(last.id),
                InstructionOrder::Due => {
                    InstructionCursor::Due(last.due_at.map_or(0, micros), last.id)
                }
            }),
            _ => None,
        };
        Ok(InstructionPage { instructions, next })
    }
}
