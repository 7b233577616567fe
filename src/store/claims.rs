//! Claims: leasing due instructions for delivery, in batches.
//!
//! An instruction is due when it is PENDING and its `next_attempt_at` has
//! passed, when it is DELIVERING and its lease has expired (the holder
//! crashed or hung: this is the redelivery path), or when it is ACKNOWLEDGED
//! and its outcome is overdue (a reminder). One set-based `UPDATE` leases a
//! batch; on PostgreSQL the candidate rows are picked `FOR UPDATE SKIP
//! LOCKED`, so replicas claiming at the same moment take disjoint rows
//! instead of queueing behind each other. The lease owner and the attempt
//! number together fence the holder: a dispatcher whose lease expired and
//! was re-claimed can no longer record anything for that instruction.

use std::time::Duration;

use sqlx::Row;

use super::codec::{INSTRUCTION_COLUMNS, from_json, instruction, micros};
use super::transition::{Sql, after_change};
use super::{Backend, Store, StoreError};
use crate::domain::{
    InstructionEvent, InstructionState, InstructionView, ProcessorId, SubjectIdentity, Timestamp,
};

/// Why an instruction was claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimKind {
    /// First delivery.
    First,
    /// A retry after a failure, or a redelivery after an expired lease.
    Retry,
    /// A reminder for an acknowledged instruction whose outcome is overdue.
    Reminder,
}

/// A leased instruction, with what the processor must be sent.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The instruction after the claim (state DELIVERING).
    pub instruction: InstructionView,
    /// The identities the processor accepts (personal data).
    pub identities: Vec<SubjectIdentity>,
    /// Why it was claimed.
    pub kind: ClaimKind,
    /// The lease holder, for fencing the result.
    pub owner: String,
}

impl Claimed {
    /// The attempt number this claim delivers (the fencing token).
    pub fn attempt(&self) -> u32 {
        self.instruction.attempts
    }
}

impl Store {
    /// Leases up to `limit` due instructions of `processor` for `lease`.
    pub async fn claim(
        &self,
        processor: &ProcessorId,
        max_reminders: u32,
        limit: u32,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claimed>, StoreError> {
        debug_assert_eq!(
            InstructionState::Pending.apply(InstructionEvent::Claim),
            Some(InstructionState::Delivering)
        );
        let now_us = micros(now);
        let lease_until = micros(now + chrono::Duration::from_std(lease).unwrap_or_default());
        let mut sql = Sql::new(
            "update instructions set state = 'DELIVERING', attempts = attempts + 1, \
             attempts_since_arm = attempts_since_arm + 1, \
             reminders = reminders + case when state = 'ACKNOWLEDGED' then 1 else 0 end, \
             next_attempt_at = null, reply_due_at = null, lease_owner = ",
        );
        sql.bind(owner)
            .push(", lease_expires_at = ")
            .bind(lease_until)
            .push(", first_instructed_at = coalesce(first_instructed_at, ")
            .bind(now_us)
            .push(") where id in (select id from instructions where processor_id = ")
            .bind(processor.as_str())
            .push(" and ((state = 'PENDING' and next_attempt_at <= ")
            .bind(now_us)
            .push(") or (state = 'DELIVERING' and lease_expires_at <= ")
            .bind(now_us)
            .push(") or (state = 'ACKNOWLEDGED' and reply_due_at <= ")
            .bind(now_us)
            .push(" and reminders < ")
            .bind(i64::from(max_reminders))
            .push(")) order by created_at limit ")
            .bind(i64::from(limit));
        if self.backend == Backend::Postgres {
            sql.push(" for update skip locked");
        }
        sql.push(") returning payload, ").push(INSTRUCTION_COLUMNS);
        let mut tx = self.begin().await?;
        let rows = sql.query().fetch_all(&mut *tx).await?;
        let mut leased = rows
            .iter()
            .map(|row| {
                Ok((
                    instruction(row)?,
                    from_json::<Vec<SubjectIdentity>>(row, "payload")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Request rows are locked in id order by every multi-request
        // transaction, so concurrent claims on replicas cannot deadlock.
        leased.sort_by_key(|(view, _)| view.request_id);
        let mut claimed = Vec::with_capacity(leased.len());
        for (view, identities) in leased {
            let kind = if view.acknowledged_at.is_some() {
                ClaimKind::Reminder
            } else if view.attempts > 1 {
                ClaimKind::Retry
            } else {
                ClaimKind::First
            };
            // The previous attempt of a redelivered instruction never
            // answered: its lease expired.
            Sql::new("update delivery_attempts set result = 'lease_expired', finished_at = ")
                .bind(now_us)
                .push(" where result = 'pending' and instruction_id = ")
                .bind(view.id.to_string())
                .query()
                .execute(&mut *tx)
                .await?;
            Sql::new(
                "insert into delivery_attempts (instruction_id, attempt, started_at, result) values (",
            )
            .bind(view.id.to_string())
            .push(", ")
            .bind(i64::from(view.attempts))
            .push(", ")
            .bind(now_us)
            .push(", ")
            .bind(if kind == ClaimKind::Reminder { "reminder" } else { "pending" })
            .push(")")
            .query()
            .execute(&mut *tx)
            .await?;
            after_change(&mut tx, &view, now).await?;
            claimed.push(Claimed {
                instruction: view,
                identities,
                kind,
                owner: owner.to_string(),
            });
        }
        tx.commit().await?;
        let touched: Vec<_> = claimed.iter().map(|c| c.instruction.request_id).collect();
        self.announce(&touched, false).await;
        Ok(claimed)
    }

    /// Escalates acknowledged instructions of `processor` whose outcome is
    /// overdue after `max_reminders` reminders.
    pub async fn escalate_overdue(
        &self,
        processor: &ProcessorId,
        max_reminders: u32,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        let rows = Sql::new(
            "update instructions set state = 'ESCALATED', reply_due_at = null, \
             last_error = 'no outcome after the last reminder' where processor_id = ",
        )
        .bind(processor.as_str())
        .push(" and state = 'ACKNOWLEDGED' and reply_due_at <= ")
        .bind(micros(now))
        .push(" and reminders >= ")
        .bind(i64::from(max_reminders))
        .push(" returning ")
        .push(INSTRUCTION_COLUMNS)
        .query()
        .fetch_all(&mut *tx)
        .await?;
        let mut views = rows
            .iter()
            .map(instruction)
            .collect::<Result<Vec<_>, _>>()?;
        views.sort_by_key(|v| v.request_id);
        let mut touched = Vec::new();
        for view in &views {
            after_change(&mut tx, view, now).await?;
            touched.push(view.request_id);
        }
        tx.commit().await?;
        self.announce(&touched, false).await;
        Ok(rows.len())
    }

    /// The earliest time any instruction becomes due (for any processor),
    /// so the dispatcher can sleep exactly until then.
    pub async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(
            "select min(t) as t from (\
             select min(next_attempt_at) as t from instructions where state = 'PENDING' \
             union all select min(lease_expires_at) from instructions where state = 'DELIVERING' \
             union all select min(reply_due_at) from instructions where state = 'ACKNOWLEDGED') due",
        )
        .fetch_one(&self.pool)
        .await?;
        row.try_get::<Option<i64>, _>("t")?
            .map(super::codec::from_micros)
            .transpose()
    }
}
