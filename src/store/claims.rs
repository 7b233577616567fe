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
use super::sql::{Bind, Sql};
use super::transition::after_changes;
use super::{Backend, Effects, Store, StoreError};
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
    /// The submitting call's W3C `traceparent`, if it had one.
    pub trace_context: Option<String>,
}

impl Claimed {
    /// The attempt number this claim delivers (the fencing token).
    pub fn attempt(&self) -> u32 {
        self.instruction.attempts
    }
}

impl Store {
    /// Leases up to `limit` due instructions of `processor` for `lease`.
    #[tracing::instrument(name = "store.claim", skip_all, fields(processor_id = %processor, limit, claimed))]
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
        // The same lease for every picked row.
        let lease_sql = |pick: &dyn Fn(&mut Sql)| {
            let mut sql = Sql::new(
                self.backend,
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
                .push(") where id in (");
            pick(&mut sql);
            if self.backend == Backend::Postgres {
                sql.push(" for update skip locked");
            }
            sql.push(") returning payload, trace_context, ")
                .push(INSTRUCTION_COLUMNS);
            sql
        };
        // Due first deliveries and retries, in due order straight off the
        // partial index (the common case, and the bulk of a backlog).
        let pending = lease_sql(&|sql| {
            sql.push("select id from instructions where processor_id = ")
                .bind(processor.as_str())
                .push(" and state = 'PENDING' and next_attempt_at <= ")
                .bind(now_us)
                .push(" order by next_attempt_at limit ")
                .bind(i64::from(limit));
        });
        let mut tx = self.begin().await?;
        let mut effects = Effects::default();
        let mut rows = pending.query().fetch_all(&mut *tx).await?;
        let room = limit as usize - rows.len().min(limit as usize);
        if room > 0 {
            // Then the rare ones: expired leases (redeliveries) and overdue
            // outcomes (reminders).
            let others = lease_sql(&|sql| {
                sql.push("select id from instructions where processor_id = ")
                    .bind(processor.as_str())
                    .push(" and ((state = 'DELIVERING' and lease_expires_at <= ")
                    .bind(now_us)
                    .push(") or (state = 'ACKNOWLEDGED' and reply_due_at <= ")
                    .bind(now_us)
                    .push(" and reminders < ")
                    .bind(i64::from(max_reminders))
                    .push(")) order by created_at limit ")
                    .bind(room as i64);
            });
            rows.extend(others.query().fetch_all(&mut *tx).await?);
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let view = instruction(row)?;
            let kind = if view.acknowledged_at.is_some() {
                ClaimKind::Reminder
            } else if view.attempts > 1 {
                ClaimKind::Retry
            } else {
                ClaimKind::First
            };
            claimed.push(Claimed {
                identities: from_json(row, "payload")?,
                instruction: view,
                kind,
                owner: owner.to_string(),
                trace_context: row.try_get("trace_context")?,
            });
        }
        if !claimed.is_empty() {
            record_attempts(&mut tx, self.backend, &claimed, now_us).await?;
            let views: Vec<InstructionView> =
                claimed.iter().map(|c| c.instruction.clone()).collect();
            after_changes(&mut tx, self.backend, &views, now, &mut effects).await?;
        }
        tx.commit().await?;
        tracing::Span::current().record("claimed", claimed.len());
        self.announce(effects).await;
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
        // Overdue outcomes are rare and every dispatcher pass asks: look
        // first, without a write transaction (and its lock on SQLite).
        let overdue = Sql::new(
            self.backend,
            "select id from instructions where processor_id = ",
        )
        .bind(processor.as_str())
        .push(" and state = 'ACKNOWLEDGED' and reply_due_at <= ")
        .bind(micros(now))
        .push(" and reminders >= ")
        .bind(i64::from(max_reminders))
        .push(" limit 1")
        .query()
        .fetch_optional(&self.pool)
        .await?;
        if overdue.is_none() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let rows = Sql::new(
            self.backend,
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
        let views = rows
            .iter()
            .map(instruction)
            .collect::<Result<Vec<_>, _>>()?;
        let mut effects = Effects::default();
        after_changes(&mut tx, self.backend, &views, now, &mut effects).await?;
        tx.commit().await?;
        self.announce(effects).await;
        Ok(views.len())
    }

    /// The earliest time the dispatcher has something to do: a push
    /// instruction due, a lease expiring, an outcome overdue. It sleeps
    /// exactly until then (pull instructions wait for their processor).
    pub async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(
            "select min(t) as t from (\
             select min(next_attempt_at) as t from instructions where state = 'PENDING' \
             and processor_id in (select id from processors where adapter_kind = 'grpc') \
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

/// Opens a history entry for each claimed attempt; the previous attempt of
/// a redelivered instruction never answered, so its lease expired.
async fn record_attempts(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    claimed: &[Claimed],
    now_us: i64,
) -> Result<(), StoreError> {
    let retried: Vec<String> = claimed
        .iter()
        .filter(|c| c.instruction.attempts > 1)
        .map(|c| c.instruction.id.to_string())
        .collect();
    if !retried.is_empty() {
        let mut sql = Sql::new(
            backend,
            "update delivery_attempts set result = 'lease_expired', finished_at = ",
        );
        sql.bind(now_us)
            .push(" where result = 'pending' and instruction_id in (")
            .list(retried)
            .push(")");
        sql.query().execute(&mut *conn).await?;
    }
    let mut sql = Sql::new(
        backend,
        "insert into delivery_attempts (instruction_id, attempt, started_at, result) values ",
    );
    sql.rows(claimed.iter().map(|c| {
        vec![
            Bind::from(c.instruction.id.to_string()),
            Bind::from(i64::from(c.instruction.attempts)),
            Bind::from(now_us),
            Bind::from(if c.kind == ClaimKind::Reminder {
                "reminder"
            } else {
                "pending"
            }),
        ]
    }));
    sql.query().execute(&mut *conn).await?;
    Ok(())
}
