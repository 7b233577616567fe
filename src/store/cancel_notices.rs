//! Cancel notices: a cancelled request's processors are told, durably.
//!
//! The cancelling transaction writes one row per instruction a processor
//! had already received (delivered to a push processor, or leased by a
//! pull one); manual processors are told by the operator who cancels. A
//! push processor's notice is sent by the dispatcher of any replica, which
//! leases it by moving `next_attempt_at` past the call's deadline (and
//! counting the attempt), deletes it once the processor answered, and
//! otherwise reschedules it under the processor's retry policy, like a
//! delivery; both writes are fenced by the attempt leased. A pull
//! processor's notices come with its pulls, leased for its ack timeout,
//! until it acknowledges each (`AcknowledgeInstruction` on the cancelled
//! instruction). Either way a crash loses none: the row stays until the
//! processor has it.

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use super::codec::{PUSH_KINDS, count, instruction_id, micros, micros_after, processor_id};
use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::domain::{InstructionId, ProcessorId, Timestamp};

/// One notice to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelNotice {
    /// The cancelled instruction.
    pub instruction_id: InstructionId,
    /// Its processor.
    pub processor_id: ProcessorId,
    /// Why the request was cancelled.
    pub reason: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

fn decode(row: &sqlx::any::AnyRow) -> Result<CancelNotice, StoreError> {
    Ok(CancelNotice {
        instruction_id: instruction_id(row, "instruction_id")?,
        processor_id: processor_id(row, "processor_id")?,
        reason: row.try_get("reason")?,
        attempts: count(row, "attempts")?,
    })
}

/// Queues a notice for each of `reached` (instruction ids a processor had
/// received) whose processor is not a manual one, in the cancelling
/// transaction; returns how many.
pub(super) async fn queue_cancel_notices(
    conn: &mut AnyConnection,
    backend: Backend,
    reached: Vec<String>,
    reason: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    if reached.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::new(
        backend,
        "insert into cancel_notices (instruction_id, request_id, processor_id, reason, \
         attempts, next_attempt_at, created_at) select i.id, i.request_id, i.processor_id, ",
    );
    sql.bind(reason)
        .push(", 0, ")
        .bind(micros(now))
        .push(", ")
        .bind(micros(now))
        .push(
            " from instructions i join processors p on p.id = i.processor_id \
             where p.adapter_kind <> 'manual' and ",
        )
        .in_list("i.id", reached);
    Ok(sql.query().execute(&mut *conn).await?.rows_affected() as usize)
}

impl Store {
    /// Push processors with notices due, and how many each.
    pub async fn due_cancel_notices(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(ProcessorId, u32)>, StoreError> {
        let rows = Sql::new(
            self.backend,
            format!(
                "select n.processor_id, count(*) as n from cancel_notices n \
                 join processors p on p.id = n.processor_id \
                 where p.adapter_kind in {PUSH_KINDS} and n.next_attempt_at <= "
            ),
        )
        .bind(micros(now))
        .push(" group by n.processor_id order by n.processor_id")
        .query()
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.try_get("n")?;
                Ok((
                    processor_id(row, "processor_id")?,
                    n.clamp(0, i64::from(u32::MAX)) as u32,
                ))
            })
            .collect()
    }

    /// Leases due notices, each for `lease`: for each processor of `asks`
    /// up to its number, the earliest due first. The dispatcher asks for
    /// as many as it has delivery slots for each push processor; a pull
    /// processor's pull for its own.
    pub async fn lease_cancel_notices(
        &self,
        asks: &[(&ProcessorId, u32)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<CancelNotice>, StoreError> {
        let asks: Vec<_> = asks.iter().filter(|(_, n)| *n > 0).collect();
        if asks.is_empty() {
            return Ok(Vec::new());
        }
        let lock = match self.backend {
            Backend::Postgres => " for update skip locked",
            Backend::Sqlite => "",
        };
        let mut due = Sql::new(
            self.backend,
            "update cancel_notices set attempts = attempts + 1, next_attempt_at = ",
        );
        due.bind(micros_after(now, lease))
            .push(" where instruction_id in (");
        for (i, (processor, limit)) in asks.iter().enumerate() {
            if i > 0 {
                due.push(" union all ");
            }
            due.push(
                "select instruction_id from (select instruction_id from cancel_notices \
                 where processor_id = ",
            )
            .bind(processor.as_str())
            .push(" and next_attempt_at <= ")
            .bind(micros(now))
            .push(" order by next_attempt_at")
            .limit(i64::from(*limit))
            .push(lock)
            .push(&format!(") q{i}"));
        }
        due.push(") returning instruction_id, processor_id, reason, attempts");
        let mut tx = self.begin().await?;
        let rows = due.query().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(decode).collect()
    }

    /// The processor has the notice: it is done. A sender passes the
    /// `attempt` it leased: a notice leased again since (its lease ran out
    /// first) is left to its new holder, who sends it again. Returns
    /// whether the notice was there to finish.
    pub async fn cancel_notice_done(
        &self,
        id: InstructionId,
        attempt: Option<u32>,
    ) -> Result<bool, StoreError> {
        let mut sql = Sql::new(
            self.backend,
            "delete from cancel_notices where instruction_id = ",
        );
        sql.bind(id.to_string());
        if let Some(attempt) = attempt {
            sql.push(" and attempts = ").bind(i64::from(attempt));
        }
        let mut tx = self.begin().await?;
        let done = sql.query().execute(&mut *tx).await?.rows_affected() > 0;
        tx.commit().await?;
        Ok(done)
    }

    /// Tries the notice leased as `attempt` again at `at`, unless it was
    /// leased again since; `refund` gives the attempt back. Returns
    /// whether it was rescheduled.
    pub async fn cancel_notice_retry(
        &self,
        id: InstructionId,
        attempt: u32,
        at: Timestamp,
        refund: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = Sql::new(self.backend, "update cancel_notices set next_attempt_at = ")
            .bind(micros(at))
            .push(", attempts = attempts - ")
            .bind(i64::from(refund))
            .push(" where instruction_id = ")
            .bind(id.to_string())
            .push(" and attempts = ")
            .bind(i64::from(attempt))
            .query()
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(done)
    }

    /// The earliest time a push processor's notice falls due, if any.
    pub async fn next_cancel_notice(&self) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select min(n.next_attempt_at) as t from cancel_notices n \
             join processors p on p.id = n.processor_id \
             where p.adapter_kind in {PUSH_KINDS}"
        )))
        .fetch_one(&self.pool)
        .await?;
        row.try_get::<Option<i64>, _>("t")?
            .map(super::codec::from_micros)
            .transpose()
    }
}
