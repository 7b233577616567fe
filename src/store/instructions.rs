//! Changing and reading single instructions: the dispatcher's delivery
//! results (fenced by lease), the processors' callbacks (acknowledge,
//! complete), the operators' re-arm and resolve, and the listings.

use sqlx::Row;

use super::codec::{INSTRUCTION_COLUMNS, instruction, micros, opt_time, state_list, time};
use super::transition::{Bind, Sql, Target, apply, json_bind};
use super::{Store, StoreError};
use crate::domain::{
    InstructionEvent, InstructionId, InstructionResult, InstructionState, InstructionView,
    ProcessorId, RequestId, ResolvedBy, Timestamp,
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
}

/// One page of instructions, oldest first.
#[derive(Debug)]
pub struct InstructionPage {
    /// The instructions.
    pub instructions: Vec<InstructionView>,
    /// Id of the last one when more follow.
    pub next_after: Option<InstructionId>,
}

/// One delivery attempt, from the history table.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryAttemptRow {
    /// 1-based.
    pub attempt: u32,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// What happened.
    pub result: String,
    /// gRPC code name of an error.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
}

/// How a delivery ended, as the dispatcher reports it.
#[derive(Clone, Debug)]
pub enum DeliveryResult {
    /// The processor accepted; the outcome is due by the given time.
    Accepted { reply_due_at: Timestamp },
    /// The processor answered with its final result.
    Outcome(InstructionResult),
    /// A retryable error; try again at the given time.
    RetryAt {
        at: Timestamp,
        code: String,
        message: String,
    },
    /// Give up and escalate (fatal error or budget exhausted).
    Escalate { code: String, message: String },
}

impl Store {
    /// Records the end of a delivery, if the caller's lease still holds.
    /// Returns `None` when the lease was lost (someone else owns it now).
    pub async fn record_delivery(
        &self,
        id: InstructionId,
        owner: &str,
        attempt: u32,
        result: DeliveryResult,
        now: Timestamp,
    ) -> Result<Option<InstructionView>, StoreError> {
        let target = Target::Leased { id, owner, attempt };
        let (event, sets, history, code, message): (_, Vec<(&'static str, Bind)>, _, _, _) =
            match result {
                DeliveryResult::Accepted { reply_due_at } => (
                    InstructionEvent::Acknowledge,
                    vec![("reply_due_at", micros(reply_due_at).into())],
                    "accepted",
                    None,
                    None,
                ),
                DeliveryResult::Outcome(r) => (
                    InstructionEvent::Resolve(r.outcome),
                    vec![
                        ("result", json_bind(&r)),
                        ("resolved_by", json_bind(&ResolvedBy::Processor)),
                    ],
                    "outcome",
                    None,
                    None,
                ),
                DeliveryResult::RetryAt { at, code, message } => (
                    InstructionEvent::RetryLater,
                    vec![
                        ("next_attempt_at", micros(at).into()),
                        ("last_error", format!("{code}: {message}").into()),
                    ],
                    "retryable_error",
                    Some(code),
                    Some(message),
                ),
                DeliveryResult::Escalate { code, message } => (
                    InstructionEvent::Escalate,
                    vec![("last_error", format!("{code}: {message}").into())],
                    "fatal_error",
                    Some(code),
                    Some(message),
                ),
            };
        // The first acknowledgement counts; a reminder's does not move it.
        // (An integer we computed, so inlining it is safe.)
        let first_ack = format!(
            "acknowledged_at = coalesce(acknowledged_at, {})",
            micros(now)
        );
        let raw: &[&str] = if event == InstructionEvent::Acknowledge {
            &[first_ack.as_str()]
        } else {
            &[]
        };
        let mut tx = self.begin().await?;
        let view = apply(&mut tx, target, event, sets, raw, now).await?;
        if view.is_some() {
            Sql::new("update delivery_attempts set result = ")
                .bind(history)
                .push(", finished_at = ")
                .bind(micros(now))
                .push(", error_code = ")
                .bind(code)
                .push(", error_message = ")
                .bind(message)
                .push(" where instruction_id = ")
                .bind(id.to_string())
                .push(" and attempt = ")
                .bind(i64::from(attempt))
                .query()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if let Some(v) = &view {
            // A retry is not due yet: the local dispatcher recomputes its sleep when
            // the delivery task ends, and other replicas need no wake-up.
            self.announce(&[v.request_id], false).await;
        }
        Ok(view)
    }

    /// One instruction.
    pub async fn instruction(&self, id: InstructionId) -> Result<InstructionView, StoreError> {
        let row = Sql::new(format!(
            "select {INSTRUCTION_COLUMNS} from instructions where id = "
        ))
        .bind(id.to_string())
        .query()
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("instruction"))?;
        instruction(&row)
    }

    /// A processor acknowledges: its outcome is then due by `reply_due_at`.
    /// Repeats (and acknowledgements of finished instructions) change
    /// nothing.
    pub async fn acknowledge(
        &self,
        id: InstructionId,
        reply_due_at: Timestamp,
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let current = self.instruction(id).await?;
        if current.state == InstructionState::Acknowledged || current.state.is_terminal() {
            return Ok(current);
        }
        let mut tx = self.begin().await?;
        let view = apply(
            &mut tx,
            Target::One(id),
            InstructionEvent::Acknowledge,
            vec![
                ("reply_due_at", micros(reply_due_at).into()),
                ("acknowledged_at", micros(now).into()),
            ],
            &[],
            now,
        )
        .await?;
        self.finish_attempt(&mut tx, id, "accepted", now).await?;
        tx.commit().await?;
        match view {
            Some(v) => {
                self.announce(&[v.request_id], false).await;
                Ok(v)
            }
            // Raced with another change; report what is there now.
            None => self.instruction(id).await,
        }
    }

    /// Records a final result. Repeating the same result is a no-op; a
    /// different one after the first is `FailedPrecondition`.
    pub async fn resolve(
        &self,
        id: InstructionId,
        result: &InstructionResult,
        by: ResolvedBy,
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let mut tx = self.begin().await?;
        let view = apply(
            &mut tx,
            Target::One(id),
            InstructionEvent::Resolve(result.outcome),
            vec![
                ("result", json_bind(result)),
                ("resolved_by", json_bind(&by)),
            ],
            &[],
            now,
        )
        .await?;
        if view.is_some() {
            self.finish_attempt(&mut tx, id, "outcome", now).await?;
        }
        tx.commit().await?;
        match view {
            Some(v) => {
                self.announce(&[v.request_id], false).await;
                Ok(v)
            }
            None => {
                let current = self.instruction(id).await?;
                match &current.result {
                    Some(r) if r.same_answer(result) => Ok(current),
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
        now: Timestamp,
    ) -> Result<InstructionView, StoreError> {
        let due = push_or_pull.then(|| micros(now));
        let mut tx = self.begin().await?;
        let view = apply(
            &mut tx,
            Target::One(id),
            InstructionEvent::Rearm,
            vec![
                ("next_attempt_at", due.into()),
                ("attempts_since_arm", 0i64.into()),
                ("reminders", 0i64.into()),
            ],
            &[],
            now,
        )
        .await?;
        tx.commit().await?;
        match view {
            Some(v) => {
                self.announce(&[v.request_id], true).await;
                Ok(v)
            }
            None => {
                let current = self.instruction(id).await?;
                Err(StoreError::FailedPrecondition(format!(
                    "only ESCALATED instructions can be retried; this one is {}",
                    current.state.as_str()
                )))
            }
        }
    }

    /// Closes the open history entry of an instruction (ack or outcome
    /// arriving by callback rather than as the delivery's answer).
    async fn finish_attempt(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: InstructionId,
        result: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        Sql::new("update delivery_attempts set result = ")
            .bind(result)
            .push(", finished_at = ")
            .bind(micros(now))
            .push(" where result in ('pending', 'pulled', 'reminder') and instruction_id = ")
            .bind(id.to_string())
            .query()
            .execute(conn)
            .await?;
        Ok(())
    }

    /// A page of instructions, oldest (by id, which is time-ordered) first.
    pub async fn list_instructions(
        &self,
        filter: &InstructionFilter,
        after: Option<InstructionId>,
        limit: u32,
    ) -> Result<InstructionPage, StoreError> {
        let mut sql = Sql::new(format!(
            "select {INSTRUCTION_COLUMNS} from instructions where 1 = 1"
        ));
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
        if let Some(a) = after {
            sql.push(" and id > ").bind(a.to_string());
        }
        sql.push(" order by id limit ").bind(i64::from(limit) + 1);
        let rows = sql.query().fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let instructions: Vec<_> = rows
            .iter()
            .take(limit as usize)
            .map(instruction)
            .collect::<Result<_, _>>()?;
        let next_after = if more {
            instructions.last().map(|i: &InstructionView| i.id)
        } else {
            None
        };
        Ok(InstructionPage {
            instructions,
            next_after,
        })
    }

    /// Every delivery attempt of an instruction, oldest first.
    pub async fn attempts(&self, id: InstructionId) -> Result<Vec<DeliveryAttemptRow>, StoreError> {
        let rows = Sql::new(
            "select attempt, started_at, finished_at, result, error_code, error_message \
             from delivery_attempts where instruction_id = ",
        )
        .bind(id.to_string())
        .push(" order by attempt")
        .query()
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeliveryAttemptRow {
                    attempt: super::codec::count(row, "attempt")?,
                    started_at: time(row, "started_at")?,
                    finished_at: opt_time(row, "finished_at")?,
                    result: row.try_get("result")?,
                    error_code: row.try_get("error_code")?,
                    error_message: row.try_get("error_message")?,
                })
            })
            .collect()
    }
}
