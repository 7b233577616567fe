//! Due work that is not a claim: escalating outcomes overdue past their
//! processor's last reminder, and the earliest time the dispatcher has
//! anything to do (it sleeps until then, and intake-first measures how late
//! deliveries run by it).

use sqlx::Row;

use super::aftermath::By;
use super::aftermath::after_changes;
use super::codec::{INSTRUCTION_COLUMNS, instruction, micros};
use super::due_reads::{NEXT_DUE, late_sql, spent_sql};
use super::picks::deliveries_since_arm;
use super::sent::{NEVER_SENT, unstamp_unsent};
use super::sql::Sql;
use super::transition::close_expired_attempts;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{ProcessorId, Timestamp};

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
    /// Whether its adapter polls (federation, OpenDSR): its reminders are
    /// polls, which spend none of `max_attempts` (see
    /// [`super::picks::deliveries_since_arm`]).
    pub polls: bool,
}

/// The error of an instruction escalated with its delivery budget spent,
/// its last lease expired. Each attempt the budget counts is a lease, sent
/// or not, and answered or not (a retryable error): one whose history
/// shows none of them sent is told so instead ([`NEVER_SENT`]).
fn spent_budget(attempts: u32) -> String {
    let noun = if attempts == 1 { "attempt" } else { "attempts" };
    format!("delivery budget of {attempts} {noun} spent; the last one ended without an answer")
}

/// The open states the clock escalates (a DELIVERING one only once its
/// lease has expired: a delivery in flight may still bring the answer).
pub(super) const CLOCKED: &str =
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
        // Spent leases and outcomes overdue past the last reminder are rare
        // and every dispatcher pass asks: one look for all processors,
        // without a write transaction (and its lock on SQLite).
        if budgets.is_empty() {
            return Ok(escalated);
        }
        let rows = spent_sql(self.backend, budgets, micros(now))
            .query()
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: String = row.try_get("processor_id")?;
            let Some(b) = budgets.iter().find(|b| b.processor.as_str() == id) else {
                continue;
            };
            if row.try_get::<Option<i64>, _>("leases")?.is_some() {
                escalated += self.escalate_spent_leases(b, now).await?;
            }
            if row.try_get::<Option<i64>, _>("replies")?.is_some() {
                escalated += self.escalate_processor(b, now).await?;
            }
        }
        Ok(escalated)
    }

    /// Escalates open instructions past their escalation time.
    async fn escalate_late(&self, now: Timestamp) -> Result<usize, StoreError> {
        let now_us = micros(now);
        // Read first, without a write transaction: usually nothing is late.
        let ids: Vec<String> = late_sql(self.backend, now_us)
            .query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let late = |sql: &mut Sql| {
            sql.in_list("id", ids.iter().cloned())
                .push(" and escalate_at <= ")
                .bind(now_us)
                .push(" and (")
                .push(CLOCKED)
                .bind(now_us)
                .push("))");
        };
        let set = "state = 'ESCALATED', escalate_at = null, reply_due_at = null, \
                   next_attempt_at = null, lease_owner = null, lease_expires_at = null, \
                   last_error = 'not answered by its due time; escalated halfway from it \
                   to the request''s deadline'";
        self.escalate_returned(set, late, NeverSent::Cleared, now)
            .await
    }

    /// Escalates a processor's expired leases whose delivery budget is
    /// spent.
    async fn escalate_spent_leases(
        &self,
        b: &Budget<'_>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let spent = |sql: &mut Sql| {
            sql.push("processor_id = ")
                .bind(b.processor.as_str())
                .push(" and state = 'DELIVERING' and lease_expires_at <= ")
                .bind(micros(now))
                .push(&format!(
                    " and {} >= ",
                    deliveries_since_arm("", &i64::from(b.polls).to_string())
                ))
                .bind(i64::from(b.max_attempts));
        };
        let set = format!(
            "state = 'ESCALATED', lease_owner = null, lease_expires_at = null, \
             last_error = '{}'",
            spent_budget(b.max_attempts)
        );
        self.escalate_returned(&set, spent, NeverSent::Explained, now)
            .await
    }

    /// Escalates, in a transaction of its own, the instructions `which`
    /// picks (it writes a condition), setting `set`; closes their open
    /// delivery attempts (their leases expired) and records the changes.
    /// `never_sent` says what becomes of the first delivery time of one
    /// whose history shows it never sent (`unstamp_unsent`).
    /// On PostgreSQL the rows are locked first in the order of their ids,
    /// as every transaction locks instructions (see `super::transition`):
    /// an update alone would lock them in the order it finds them, and
    /// could deadlock with a transaction locking two of them the other way.
    async fn escalate_returned(
        &self,
        set: &str,
        which: impl Fn(&mut Sql),
        never_sent: NeverSent,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            let mut lock = Sql::new(self.backend, "select id from instructions where ");
            which(&mut lock);
            lock.push(" order by id for update");
            lock.query().fetch_all(&mut *tx).await?;
        }
        let mut update = Sql::new(
            self.backend,
            format!("update instructions set {set} where "),
        );
        which(&mut update);
        update.push(" returning ").push(INSTRUCTION_COLUMNS);
        let mut views = update
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
        let error = match never_sent {
            NeverSent::Unchecked => None,
            NeverSent::Cleared => Some(None),
            NeverSent::Explained => Some(Some(NEVER_SENT)),
        };
        if let Some(error) = error {
            unstamp_unsent(&mut tx, self.backend, &mut views, error).await?;
        }
        let ids = views.iter().map(|v| v.id.to_string());
        close_expired_attempts(&mut tx, self.backend, ids, micros(now)).await?;
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

    /// Escalates a processor's outcomes overdue past its last reminder.
    async fn escalate_processor(
        &self,
        b: &Budget<'_>,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let overdue = |sql: &mut Sql| {
            sql.push("processor_id = ")
                .bind(b.processor.as_str())
                .push(" and state = 'ACKNOWLEDGED' and reply_due_at <= ")
                .bind(micros(now))
                .push(" and reminders >= ")
                .bind(i64::from(b.max_reminders));
        };
        let set = "state = 'ESCALATED', reply_due_at = null, \
                   last_error = 'no outcome after the last reminder'";
        self.escalate_returned(set, overdue, NeverSent::Unchecked, now)
            .await
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

/// What an escalation does with the first delivery time of an instruction
/// whose history shows it never sent: its first lease set the time, and
/// that lease ended before its delivery began.
#[derive(Clone, Copy, Debug)]
enum NeverSent {
    /// Nothing: every instruction it escalates had a delivery answered.
    Unchecked,
    /// Clears it.
    Cleared,
    /// Clears it, and the instruction's error says why ([`NEVER_SENT`]).
    Explained,
}
