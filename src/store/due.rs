//! Due work that is not a claim: escalating outcomes overdue past their
//! processor's last reminder, and the earliest time the dispatcher has
//! anything to do (it sleeps until then, and intake-first measures how late
//! deliveries run by it).

use std::sync::LazyLock;

use sqlx::Row;

use super::aftermath::By;
use super::aftermath::after_changes;
use super::codec::{INSTRUCTION_COLUMNS, instruction, micros};
use super::sql::Sql;
use super::{Effects, Store, StoreError};
use crate::domain::{ProcessorId, Timestamp};

impl Store {
    /// Escalates acknowledged instructions whose outcome is overdue after
    /// their processor's last reminder; `budgets` pairs each processor with
    /// its `max_reminders`. Returns how many were escalated.
    pub async fn escalate_overdue(
        &self,
        budgets: &[(&ProcessorId, u32)],
        now: Timestamp,
    ) -> Result<usize, StoreError> {
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
        let mut escalated = 0;
        for row in rows {
            let id: String = row.try_get("processor_id")?;
            let most: i64 = row.try_get("reminders")?;
            if let Some((p, max)) = budgets
                .iter()
                .find(|(p, max)| p.as_str() == id && most >= i64::from(*max))
            {
                escalated += self.escalate_processor(p, *max, now).await?;
            }
        }
        Ok(escalated)
    }

    /// Escalates one processor's overdue outcomes past `max_reminders`.
    async fn escalate_processor(
        &self,
        processor: &ProcessorId,
        max_reminders: u32,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
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
        after_changes(
            &mut tx,
            self.backend,
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
         select {} as t from processors p where p.adapter_kind = 'grpc' \
         union all select {} from processors p where p.adapter_kind = 'grpc' \
         union all select {} from processors p where p.adapter_kind = 'grpc') due",
        first("next_attempt_at", "PENDING"),
        first("lease_expires_at", "DELIVERING"),
        first("reply_due_at", "ACKNOWLEDGED"),
    )
});
