//! Cancel notices: a cancelled request's processors are told, durably.
//!
//! The cancelling transaction writes one row per instruction a processor
//! had already received (delivered to a push processor, or leased by a
//! pull one); manual processors are told by the operator who cancels. A
//! push processor's notice is sent by the dispatcher of any replica, which
//! leases it by moving `next_attempt_at` past the call's deadline, deletes
//! it once the processor answered, and otherwise reschedules it under the
//! processor's retry policy, like a delivery. A pull processor's notices
//! come with its pulls, leased for its ack timeout, until it acknowledges
//! each (`AcknowledgeInstruction` on the cancelled instruction). Either
//! way a crash loses none: the row stays until the processor has it.

use std::time::Duration;

use sqlx::Row;

use super::codec::{PUSH_KINDS, instruction_id, micros, micros_after, processor_id};
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
        attempts: row.try_get::<i64, _>("attempts")? as u32,
    })
}

impl Store {
    /// Leases up to `limit` due notices: to push processors (`processor`
    /// `None`, for the dispatcher), or to one pull processor (for its
    /// pull), each for `lease`.
    pub async fn lease_cancel_notices(
        &self,
        processor: Option<&ProcessorId>,
        limit: u32,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<CancelNotice>, StoreError> {
        let mut due = Sql::new(
            self.backend,
            "update cancel_notices set attempts = attempts + 1, next_attempt_at = ",
        );
        due.bind(micros_after(now, lease))
            .push(
                " where instruction_id in (select n.instruction_id from cancel_notices n \
                 join processors p on p.id = n.processor_id where n.next_attempt_at <= ",
            )
            .bind(micros(now));
        match processor {
            Some(p) => due.push(" and n.processor_id = ").bind(p.as_str()),
            None => due.push(" and p.adapter_kind in ").push(PUSH_KINDS),
        };
        due.push(" order by n.next_attempt_at limit ")
            .bind(i64::from(limit));
        if self.backend == Backend::Postgres {
            due.push(" for update of n skip locked");
        }
        due.push(") returning instruction_id, processor_id, reason, attempts");
        let mut tx = self.begin().await?;
        let rows = due.query().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.iter().map(decode).collect()
    }

    /// The processor has the notice: it is done.
    pub async fn cancel_notice_done(&self, id: InstructionId) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::new(
            self.backend,
            "delete from cancel_notices where instruction_id = ",
        )
        .bind(id.to_string())
        .query()
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tries the notice again at `at`.
    pub async fn cancel_notice_retry(
        &self,
        id: InstructionId,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::new(self.backend, "update cancel_notices set next_attempt_at = ")
            .bind(micros(at))
            .push(" where instruction_id = ")
            .bind(id.to_string())
            .query()
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
