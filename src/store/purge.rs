//! Retention: a closed request's completion record and audit trail are
//! kept for the retention period after its response (`closed_at`), then
//! purged together with every other row of the request (its instructions,
//! their delivery attempts, its events). Open requests are never purged,
//! whatever their age.
//!
//! Purge is the one deletion the database allows. On PostgreSQL, triggers
//! refuse to delete requests, instructions, events and records unless the
//! deleting transaction has set `dsr.purge` for itself (`set local`); on
//! SQLite, unless the `purge_gate` row is open, which the purge opens and
//! closes again inside its own transaction, so no other writer ever finds
//! it open. Requests go in batches, oldest response first, each batch one
//! transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::codec::{micros, request_id};
use super::sql::Sql;
use super::{Backend, Store, StoreError};
use crate::clock::Clock;
use crate::domain::{Period, Timestamp};

/// Requests purged per transaction.
const BATCH: i64 = 200;

impl Store {
    /// The purge, to run on a task of its own: every `interval`, purges
    /// the requests closed longer than `retention` ago, until `stop`.
    pub fn purger(
        &self,
        retention: Period,
        interval: Duration,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let cutoff = retention.before(clock.now());
                match store.purge_closed_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(requests = n, %retention, "purged requests past their retention")
                    }
                    Err(StoreError::Database(e)) if matches!(*e, sqlx::Error::PoolClosed) => return,
                    Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
                }
            }
        }
    }

    /// Purges every request closed before `cutoff`, with all its rows;
    /// returns how many.
    pub async fn purge_closed_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut purged = 0;
        loop {
            let mut tx = self.begin().await?;
            let ids = Sql::new(
                self.backend,
                "select id from requests where status in ('COMPLETED', 'CANCELLED') \
                 and closed_at < ",
            )
            .bind(micros(cutoff))
            .push(" order by closed_at, id")
            .limit(BATCH)
            // Locked on PostgreSQL: a change that still comes to a closed
            // request (its data fetched, its subject's suppression
            // removed) adds an event under the request row's lock, and
            // must not add it between the events' delete and the
            // request's. (SQLite's one writer runs them in turn.)
            .push(if self.backend == Backend::Postgres {
                " for update"
            } else {
                ""
            })
            .query()
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| request_id(r, "id").map(|id| id.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                tx.rollback().await?;
                return Ok(purged);
            }
            match self.backend {
                Backend::Postgres => {
                    sqlx::query("set local dsr.purge = 'on'")
                        .execute(&mut *tx)
                        .await?;
                }
                Backend::Sqlite => {
                    sqlx::query("update purge_gate set open = 1 where id = 1")
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let mut attempts = Sql::new(
                self.backend,
                "delete from delivery_attempts where instruction_id in \
                 (select id from instructions where ",
            );
            attempts.in_list("request_id", ids.clone()).push(")");
            attempts.query().execute(&mut *tx).await?;
            for (table, column) in [
                ("cancel_notices", "request_id"),
                ("instructions", "request_id"),
                ("request_events", "request_id"),
                ("completion_records", "request_id"),
                ("requests", "id"),
            ] {
                let mut sql = Sql::new(self.backend, format!("delete from {table} where "));
                sql.in_list(column, ids.clone());
                sql.query().execute(&mut *tx).await?;
            }
            if self.backend == Backend::Sqlite {
                sqlx::query("update purge_gate set open = 0 where id = 1")
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            purged += ids.len();
            if (ids.len() as i64) < BATCH {
                return Ok(purged);
            }
        }
    }
}
