//! Point-in-time counts for the gauges: open requests and their age, open
//! instructions by processor and state, the due queue, and finished
//! requests whose erasure is overdue. Each query reads
//! only open (or not yet erased) rows through a partial index, so its cost
//! follows the amount of open work, not the size of the history.

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
    /// Open requests by the time left to their response deadline, per
    /// bucket of [`TIME_LEFT`].
    pub by_time_left: Vec<(&'static str, u64)>,
    /// Open requests whose receipt confirmation is overdue.
    pub receipt_overdue: u64,
    /// Processors whose circuit breaker is open, and whether it is half
    /// open (its cool-down over).
    pub breakers: Vec<(ProcessorId, bool)>,
    /// Finished requests whose personal data was due for erasure (see
    /// [`Store::erase_finished`]) longer than the schedule's grace ago, and
    /// is still held.
    pub erasure_overdue: u64,
}

/// The buckets of time left to a response deadline: past it, under a
/// day, under a week, under 30 days, and more.
pub const TIME_LEFT: [&str; 5] = [
    "overdue",
    "under_1d",
    "under_7d",
    "under_30d",
    "30d_or_more",
];

impl Store {
    /// Counts the open work as of `now`, and the erasures overdue under
    /// `erasure`.
    pub async fn stats(
        &self,
        now: Timestamp,
        erasure: super::ErasureSchedule,
    ) -> Result<Stats, StoreError> {
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
        let now_us = super::codec::micros(now);
        let day = 86_400_000_000i64;
        let mut sql = Sql::new(self.backend, "select coalesce(sum(case when respond_by < ");
        sql.bind(now_us)
            .push(" then 1 else 0 end), 0) as b0, coalesce(sum(case when respond_by >= ")
            .bind(now_us)
            .push(" and respond_by < ")
            .bind(now_us + day)
            .push(" then 1 else 0 end), 0) as b1, coalesce(sum(case when respond_by >= ")
            .bind(now_us + day)
            .push(" and respond_by < ")
            .bind(now_us + 7 * day)
            .push(" then 1 else 0 end), 0) as b2, coalesce(sum(case when respond_by >= ")
            .bind(now_us + 7 * day)
            .push(" and respond_by < ")
            .bind(now_us + 30 * day)
            .push(" then 1 else 0 end), 0) as b3, coalesce(sum(case when respond_by >= ")
            .bind(now_us + 30 * day)
            .push(" then 1 else 0 end), 0) as b4, coalesce(sum(case when confirmed_at is null and confirm_by < ")
            .bind(now_us)
            .push(
                " then 1 else 0 end), 0) as receipt from requests \
                 where status in ('RECEIVED', 'IN_PROGRESS')",
            );
        let row = sql.query().fetch_one(&self.pool).await?;
        for (i, label) in TIME_LEFT.iter().enumerate() {
            let n: i64 = row.try_get(format!("b{i}").as_str())?;
            stats.by_time_left.push((label, n as u64));
        }
        stats.receipt_overdue = row.try_get::<i64, _>("receipt")? as u64;
        // What the eraser would have taken a grace ago (two of its passes),
        // still there: at `then`, finished and due.
        let then = super::erase::before(now, erasure.grace());
        let window_start = super::erase::before(then, erasure.report_window);
        let mut sql = Sql::new(self.backend, "select count(*) as n from requests where ");
        super::erase::due_for_erasure(&mut sql, "", super::codec::micros(window_start));
        sql.push(" and closed_at < ")
            .bind(super::codec::micros(then));
        let row = sql.query().fetch_one(&self.pool).await?;
        stats.erasure_overdue = row.try_get::<i64, _>("n")? as u64;
        for (id, breaker) in self.breakers().await? {
            stats.breakers.push((id, breaker.half_open(now)));
        }
        Ok(stats)
    }
}
