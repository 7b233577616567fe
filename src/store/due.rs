//! Due work that is not a claim: escalating outcomes overdue past their
//! processor's last reminder, and the earliest time the dispatcher has
//! anything to do (it sleeps until then, and intake-first measures how late
//! deliveries run by it).

use std::sync::LazyLock;

use sqlx::Row;

use super::aftermath::By;
use super::aftermath::after_changes;
use super::codec::{INSTRUCTION_COLUMNS, PUSH_KINDS, instruction, micros};
use super::sql::Sql;
use super::{Effects, Store, StoreError};
use crate::domain::{AttemptResult, ProcessorId, Timestamp};

/// One processor's budgets, for [`Store::escalate_overdue`].
#[derive(Clone, Copy, Debug)]
pub struct Budget<'a> {
    /// The processor.
    pub processor: &'a ProcessorId,
    /// Reminders before an overdue outcome escalates.
    pub max_reminders: u32,
    /// Deliveries (pulls, for a pull processor) before an unanswered one
    /// escalates.
    pub max_attempts: u32,
}

/// The open states the clock escalates (a DELIVERING one only once its
/// lease has expired: a delivery in flight may still bring the answer).
const CLOCKED: &str =
    "state in ('PENDING', 'ACKNOWLEDGED') or (state = 'DELIVERING' and lease_expires_at <= ";

impl Store {
    /// Escalates every instruction that has run out of time or budget:
    /// any open one past its escalation time (see
    /// [`crate::domain::due_times`]), acknowledged ones whose outcome is
    /// overdue after their processor's last reminder, and leases that
    /// expired unanswered with the delivery budget spent (a pull processor
    /// that takes an instruction again and again and never answers).
    /// Returns how many were escalated.
    pub async fn escalate_overdue(
        &self,
        budgets: &[Budget<'_>],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut escalated = self.escalate_late(now).await?;
        escalated += self.escalate_spent_leases(budgets, now).await?;
        // Overdue outcomes are rare and every dispatcher pass asks: one
        // look for all processors, without a write transaction (and its
        // lock on SQLite).
        let rows = Sql::new(
            self.backend,
            "select processor_id, max(reminders) as reminders from instructions \
             where state = 'ACKNOWLEDGED' and reply_due_at <= ",
        )
        .bind(micros(now))
        .push(" group by processor_id")
        .query()
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let id: String = row.try_get("processor_id")?;
            let most: i64 = row.try_get("reminders")?;
            if let Some(b) = budgets
                .iter()
                .find(|b| b.processor.as_str() == id && most >= i64::from(b.max_reminders))
            {
                escalated += self
                    .escalate_processor(b.processor, b.max_reminders, now)
                    .await?;
            }
        }
        Ok(escalated)
    }

    /// Escalates open instructions past their escalation time.
    async fn escalate_late(&self, now: Timestamp) -> Result<usize, StoreError> {
        let now_us = micros(now);
        // Read first, without a write transaction: usually nothing is late.
        let ids: Vec<String> = Sql::new(
            self.backend,
            "select id from instructions where escalate_at <= ",
        )
        .bind(now_us)
        .push(" and state in ('PENDING', 'DELIVERING', 'ACKNOWLEDGED') and (")
        .push(CLOCKED)
        .bind(now_us)
        .push(")) order by escalate_at limit 500")
        .query()
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut sql = Sql::new(
            self.backend,
            "update instructions set state = 'ESCALATED', escalate_at = null, \
             reply_due_at = null, next_attempt_at = null, lease_owner = null, \
             lease_expires_at = null, last_error = 'not answered by its due time; \
             escalated halfway from it to the request''s deadline' where ",
        );
        sql.in_list("id", ids)
            .push(" and escalate_at <= ")
            .bind(now_us)
            .push(" and (")
            .push(CLOCKED)
            .bind(now_us)
            .push(")) returning ")
            .push(INSTRUCTION_COLUMNS);
        self.escalate_returned(sql, now).await
    }

    /// Escalates expired leases whose delivery budget is spent.
    async fn escalate_spent_leases(
        &self,
        budgets: &[Budget<'_>],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let now_us = micros(now);
        let rows = Sql::new(
            self.backend,
            "select processor_id, max(attempts_since_arm) as attempts from instructions \
             where state = 'DELIVERING' and lease_expires_at <= ",
        )
        .bind(now_us)
        .push(" group by processor_id")
        .query()
        .fetch_all(&self.pool)
        .await?;
        let mut escalated = 0;
        for row in rows {
            let id: String = row.try_get("processor_id")?;
            let most: i64 = row.try_get("attempts")?;
            let Some(b) = budgets
                .iter()
                .find(|b| b.processor.as_str() == id && most >= i64::from(b.max_attempts))
            else {
                continue;
            };
            let mut sql = Sql::new(
                self.backend,
                "update instructions set state = 'ESCALATED', lease_owner = null, \
                 lease_expires_at = null, last_error = 'delivered ",
            );
            sql.push(&format!(
                "{} times without an answer' where processor_id = ",
                b.max_attempts
            ))
            .bind(b.processor.as_str())
            .push(" and state = 'DELIVERING' and lease_expires_at <= ")
            .bind(now_us)
            .push(" and attempts_since_arm >= ")
            .bind(i64::from(b.max_attempts))
            .push(" returning ")
            .push(INSTRUCTION_COLUMNS);
            escalated += self.escalate_returned(sql, now).await?;
        }
        Ok(escalated)
    }

    /// Runs an escalating `update ... returning` in its own transaction,
    /// closes the escalated instructions' open delivery attempts (their
    /// leases expired), and records the changes.
    async fn escalate_returned(&self, sql: Sql, now: Timestamp) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        let views = sql
            .query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(instruction)
            .collect::<Result<Vec<_>, _>>()?;
        if views.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let mut close = Sql::new(self.backend, "update delivery_attempts set result = ");
        close
            .bind(AttemptResult::LeaseExpired.as_str())
            .push(", finished_at = ")
            .bind(micros(now))
            .push(" where result = ")
            .bind(AttemptResult::Pending.as_str())
            .push(" and ")
            .in_list("instruction_id", views.iter().map(|v| v.id.to_string()));
        close.query().execute(&mut *tx).await?;
        let mut effects = Effects::default();
        after_changes(
            &mut tx,
            self.backend,
            &self.keys,
            &views,
            By::Dispatch,
            now,
            &mut effects,
        )
        .await?;
        tx.commit().await?;
        self.announce(effects);
        Ok(views.len())
    }

    /// Escalates one processor's overdue outcomes past `max_reminders`.
    async fn escalate_processor(
        &self,
        processor: &ProcessorId,
        max_reminders: u32,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut sql = Sql::new(
            self.backend,
            "update instructions set state = 'ESCALATED', reply_due_at = null, \
             last_error = 'no outcome after the last reminder' where processor_id = ",
        );
        sql.bind(processor.as_str())
            .push(" and state = 'ACKNOWLEDGED' and reply_due_at <= ")
            .bind(micros(now))
            .push(" and reminders >= ")
            .bind(i64::from(max_reminders))
            .push(" returning ")
            .push(INSTRUCTION_COLUMNS);
        self.escalate_returned(sql, now).await
    }

    /// The earliest time the dispatcher has something to do: a push
    /// instruction due, a push delivery's lease expiring, a push
    /// processor's outcome overdue. It sleeps exactly until then, and
    /// intake-first measures how late deliveries run by it. Pull and manual
    /// processors' work waits for them: a pull processor's expired leases
    /// and overdue outcomes are offered again at its next pull, and counted
    /// here they stayed overdue for as long as it stayed away, which ended
    /// intake-first's hold for good. (Escalations of any processor's
    /// overdue outcomes are looked for at every pass regardless.)
    ///
    /// Each part is a per-processor probe of the first entry of a partial
    /// index (`order by ... limit 1`), so the cost does not grow with the
    /// backlog: a plain `min()` over all processors at once cannot use the
    /// `(processor_id, due)` indexes and scanned every due row.
    pub async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(NEXT_DUE.as_str()))
            .fetch_one(&self.pool)
            .await?;
        row.try_get::<Option<i64>, _>("t")?
            .map(super::codec::from_micros)
            .transpose()
    }
}

/// The [`Store::next_due`] statement.
static NEXT_DUE: LazyLock<String> = LazyLock::new(|| {
    let first = |column: &str, state: &str| {
        format!(
            "(select {column} from instructions i where i.processor_id = p.id \
             and i.state = '{state}' and i.{column} is not null order by i.{column} limit 1)"
        )
    };
    format!(
        "select min(t) as t from (\
         select {} as t from processors p where p.adapter_kind in {PUSH_KINDS} \
         union all select {} from processors p where p.adapter_kind in {PUSH_KINDS} \
         union all select {} from processors p where p.adapter_kind in {PUSH_KINDS}) due",
        first("next_attempt_at", "PENDING"),
        first("lease_expires_at", "DELIVERING"),
        first("reply_due_at", "ACKNOWLEDGED"),
    )
});
