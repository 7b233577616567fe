//! Point-in-time counts for the gauges: open requests and their age, open
//! instructions by processor and state, and the due queue. Each query reads
//! only open rows through a partial index, so its cost follows the amount of
//! open work, not the size of the history.

use sqlx::Row;

use super::codec::{from_micros, parsed, processor_id};
use super::sql::Sql;
use super::{Store, StoreError};
use crate::domain::{InstructionState, ProcessorId, RequestStatus, Timestamp};

/// The open work, counted.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Per open status: how many requests, and when the oldest was received.
    pub open_requests: Vec<(RequestStatus, u64, Option<Timestamp>)>,
    /// Per processor and non-terminal state: how many instructions.
    pub open_instructions: Vec<(ProcessorId, InstructionState, u64)>,
    /// Per processor: PENDING instructions already due.
    pub due: Vec<(ProcessorId, u64)>,
}

impl Store {
    /// Counts the open work as of `now`.
    pub async fn stats(&self, now: Timestamp) -> Result<Stats, StoreError> {
        let mut stats = Stats::default();
        let rows = sqlx::query(
            "select status, count(*) as n, min(received_at) as oldest from requests \
             where status in ('RECEIVED', 'IN_PROGRESS') group by status",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let oldest: Option<i64> = row.try_get("oldest")?;
            stats.open_requests.push((
                parsed(row, "status", RequestStatus::parse)?,
                row.try_get::<i64, _>("n")? as u64,
                oldest.map(from_micros).transpose()?,
            ));
        }
        // One arm per state, so each reads its own partial index.
        let rows = sqlx::query(
            "select processor_id, state, count(*) as n from instructions \
             where state = 'PENDING' group by processor_id, state \
             union all select processor_id, state, count(*) from instructions \
             where state = 'DELIVERING' group by processor_id, state \
             union all select processor_id, state, count(*) from instructions \
             where state = 'ACKNOWLEDGED' group by processor_id, state \
             union all select processor_id, state, count(*) from instructions \
             where state = 'ESCALATED' group by processor_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            stats.open_instructions.push((
                processor_id(row, "processor_id")?,
                parsed(row, "state", InstructionState::parse)?,
                row.try_get::<i64, _>("n")? as u64,
            ));
        }
        let rows = Sql::new(
            self.backend,
            "select processor_id, count(*) as n from instructions \
             where state = 'PENDING' and next_attempt_at <= ",
        )
        .bind(super::codec::micros(now))
        .push(" group by processor_id")
        .query()
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            stats.due.push((
                processor_id(row, "processor_id")?,
                row.try_get::<i64, _>("n")? as u64,
            ));
        }
        Ok(stats)
    }
}
