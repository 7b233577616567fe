//! Circuit breakers, shared by every replica through the database (see
//! `dispatch::breaker` for when they open and close). A row exists only
//! while a processor's breaker is open.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;

use super::codec::{from_micros, micros, micros_after, processor_id};
use super::due_reads::first_due;
use super::sql::Sql;
use super::{Store, StoreError};
use crate::domain::{ProcessorId, Timestamp};

/// An open breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    /// When it opened.
    pub opened_at: Timestamp,
    /// Consecutive failed deliveries that opened it (or kept it open).
    pub failures: u32,
    /// When a probe may go.
    pub retry_at: Timestamp,
    /// The cool-down that set `retry_at`.
    pub cooldown: Duration,
}

impl Breaker {
    /// Whether a probe may go at `now` (the breaker is half open).
    pub fn half_open(&self, now: Timestamp) -> bool {
        now >= self.retry_at
    }
}

impl Store {
    /// Whether any breaker is open, and whether any cancel notice waits:
    /// one cheap read, so that a dispatcher pass looks further only when
    /// there is something to see.
    pub async fn side_work(&self) -> Result<(bool, bool), StoreError> {
        let row = sqlx::query(
            "select (select count(*) from circuit_breakers) as breakers, \
             (select count(*) from (select 1 from cancel_notices limit 1) n) as notices",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get::<i64, _>("breakers")? > 0,
            row.try_get::<i64, _>("notices")? > 0,
        ))
    }

    /// Every open breaker.
    pub async fn breakers(&self) -> Result<HashMap<ProcessorId, Breaker>, StoreError> {
        let rows = sqlx::query(
            "select processor_id, opened_at, failures, retry_at, cooldown_ms from circuit_breakers",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    processor_id(row, "processor_id")?,
                    Breaker {
                        opened_at: from_micros(row.try_get("opened_at")?)?,
                        failures: row.try_get::<i64, _>("failures")? as u32,
                        retry_at: from_micros(row.try_get("retry_at")?)?,
                        cooldown: Duration::from_millis(
                            row.try_get::<i64, _>("cooldown_ms")?.max(0) as u64,
                        ),
                    },
                ))
            })
            .collect()
    }

    /// Opens `processor`'s breaker for `cooldown` after `failures`
    /// consecutive failures, or opens it again after a failed probe
    /// (`failures` 1). An open breaker's count grows by `failures`: it
    /// counts every failure since the last delivery that went through,
    /// those a replica counted while it was open included (deliveries
    /// sent before it opened, another replica's). Its cool-down and the
    /// time of its next probe only ever grow while it is open, so such a
    /// late count does not undo a probe's doubled cool-down.
    pub async fn open_breaker(
        &self,
        processor: &ProcessorId,
        failures: u32,
        cooldown: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::new(
            self.backend,
            "insert into circuit_breakers (processor_id, opened_at, failures, retry_at, \
             cooldown_ms, probe_until) values (",
        )
        .bind(processor.as_str())
        .push(", ")
        .bind(micros(now))
        .push(", ")
        .bind(i64::from(failures))
        .push(", ")
        .bind(micros_after(now, cooldown))
        .push(", ")
        .bind(cooldown.as_millis() as i64)
        .push(
            ", null) on conflict (processor_id) do update set \
             failures = circuit_breakers.failures + excluded.failures, ",
        )
        .push(match self.backend {
            // Two-argument max() is SQLite's scalar maximum.
            super::Backend::Sqlite => {
                "retry_at = max(circuit_breakers.retry_at, excluded.retry_at), \
                 cooldown_ms = max(circuit_breakers.cooldown_ms, excluded.cooldown_ms), "
            }
            super::Backend::Postgres => {
                "retry_at = greatest(circuit_breakers.retry_at, excluded.retry_at), \
                 cooldown_ms = greatest(circuit_breakers.cooldown_ms, excluded.cooldown_ms), "
            }
        })
        .push("probe_until = null")
        .query()
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `processor` has work due at `now` that could probe its
    /// breaker: a delivery, a redelivery or a reminder, or a cancel notice.
    /// Each is one probe of the front of a partial index (or of the
    /// notices of the processor): a read, where taking and giving back
    /// the probe at every pass of every replica would be two writes.
    pub async fn probe_due(
        &self,
        processor: &ProcessorId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "select {} as retry, {} as lease, {} as reply, \
             (select min(next_attempt_at) from cancel_notices n where n.processor_id = p.id) \
             as notice from processors p where p.id = ",
            first_due("next_attempt_at", "PENDING"),
            first_due("lease_expires_at", "DELIVERING"),
            first_due("reply_due_at", "ACKNOWLEDGED"),
        );
        let mut sql = Sql::new(self.backend, sql);
        sql.bind(processor.as_str());
        let Some(row) = sql.query().fetch_optional(&self.pool).await? else {
            return Ok(false);
        };
        let now = micros(now);
        for column in ["retry", "lease", "reply", "notice"] {
            if row
                .try_get::<Option<i64>, _>(column)?
                .is_some_and(|t| t <= now)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes the one probe of a half-open breaker for `lease`: true for
    /// the replica that got it.
    pub async fn take_probe(
        &self,
        processor: &ProcessorId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let taken = Sql::new(self.backend, "update circuit_breakers set probe_until = ")
            .bind(micros_after(now, lease))
            .push(" where processor_id = ")
            .bind(processor.as_str())
            .push(" and retry_at <= ")
            .bind(micros(now))
            .push(" and (probe_until is null or probe_until <= ")
            .bind(micros(now))
            .push(")")
            .query()
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(taken == 1)
    }

    /// Gives back the probe [`Store::take_probe`] took at `now` for
    /// `lease`, when the pass found nothing to probe with: the next pass,
    /// on any replica, may take it at once. A lease already taken again
    /// (after this one ran out) is left alone.
    pub async fn release_probe(
        &self,
        processor: &ProcessorId,
        lease: Duration,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::new(
            self.backend,
            "update circuit_breakers set probe_until = null where processor_id = ",
        )
        .bind(processor.as_str())
        .push(" and probe_until = ")
        .bind(micros_after(now, lease))
        .query()
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes `processor`'s breaker; false if it was not open.
    pub async fn close_breaker(&self, processor: &ProcessorId) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let closed = Sql::new(
            self.backend,
            "delete from circuit_breakers where processor_id = ",
        )
        .bind(processor.as_str())
        .query()
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(closed == 1)
    }
}
