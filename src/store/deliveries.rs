//! Recording what deliveries answered, in batches. The dispatcher hands
//! over every finished delivery; each report applies only while the
//! reporter's lease (owner and attempt) still holds, so a dispatcher that
//! lost its lease to a redelivery cannot overwrite the newer attempt. And
//! reading the attempts back, for a page of instructions.

use std::collections::HashMap;

use sqlx::Row;

use super::aftermath::By;
use super::codec::{opt_time, time};
use super::sql::{Bind, Col, Sql};
use super::transition::{AttemptClose, Change, apply, close_expired_attempts};
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{
    AttemptResult, InstructionEvent, InstructionId, InstructionResult, InstructionView, ResolvedBy,
    Timestamp,
};

/// How a delivery ended.
#[derive(Clone, Debug)]
pub enum DeliveryResult {
    /// The processor accepted; the outcome is due by the given time.
    Accepted {
        /// When a reminder goes out if no outcome has come.
        reply_due_at: Timestamp,
    },
    /// The processor answered with its final result.
    Outcome(InstructionResult),
    /// A retryable error; try again at the given time.
    RetryAt {
        /// When the next attempt is due.
        at: Timestamp,
        /// gRPC code name.
        code: String,
        /// Error message.
        message: String,
        /// Whether the attempt is given back to the retry budget (a
        /// failed circuit-breaker probe); it stays in the history.
        refund: bool,
    },
    /// Give up and escalate (fatal error or budget exhausted).
    Escalate {
        /// How the attempt itself is recorded: what the processor said.
        attempt: AttemptResult,
        /// gRPC code name (or our own).
        code: String,
        /// Error message.
        message: String,
    },
}

/// One finished delivery, as its dispatcher reports it.
#[derive(Clone, Debug)]
pub struct DeliveryReport {
    /// The instruction.
    pub id: InstructionId,
    /// The lease owner that delivered it.
    pub owner: String,
    /// The attempt number it delivered (the fencing token).
    pub attempt: u32,
    /// What came back.
    pub result: DeliveryResult,
}

impl DeliveryReport {
    fn into_change(self, now: Timestamp) -> Change {
        let close = |result, code, message| AttemptClose {
            result,
            code,
            message,
        };
        let mut change = match self.result {
            DeliveryResult::Accepted { reply_due_at } => {
                let mut c = Change::new(self.id, InstructionEvent::Acknowledge);
                c.reply_due_at = Some(reply_due_at);
                c.acknowledged_at = Some(now);
                c.close_attempt = Some(close(AttemptResult::Accepted, None, None));
                c
            }
            DeliveryResult::Outcome(r) => {
                let mut c = Change::new(self.id, InstructionEvent::Resolve(r.outcome));
                c.result = Some(r);
                c.resolved_by = Some(ResolvedBy::Processor);
                c.close_attempt = Some(close(AttemptResult::Outcome, None, None));
                c
            }
            DeliveryResult::RetryAt {
                at,
                code,
                message,
                refund,
            } => {
                let mut c = Change::new(self.id, InstructionEvent::RetryLater);
                c.next_attempt_at = Some(at);
                c.refund = refund;
                c.last_error = Some(format!("{code}: {message}"));
                c.close_attempt = Some(close(
                    AttemptResult::RetryableError,
                    Some(code),
                    Some(message),
                ));
                c
            }
            DeliveryResult::Escalate {
                attempt,
                code,
                message,
            } => {
                let mut c = Change::new(self.id, InstructionEvent::Escalate);
                c.last_error = Some(format!("{code}: {message}"));
                c.close_attempt = Some(close(attempt, Some(code), Some(message)));
                c
            }
        };
        change.fence = Some((self.owner, self.attempt));
        change
    }
}

impl Store {
    /// Records a batch of finished deliveries in one transaction. Returns
    /// the instructions that changed; reports whose lease was lost are
    /// dropped (the newer claim wins).
    #[tracing::instrument(name = "store.record_deliveries", skip_all, fields(results = reports.len()))]
    pub async fn record_deliveries(
        &self,
        reports: Vec<DeliveryReport>,
        now: Timestamp,
    ) -> Result<Vec<InstructionView>, StoreError> {
        let changes: Vec<Change> = reports
            .into_iter()
            .map(|r| self.sealing_records(r.into_change(now)))
            .collect();
        let mut tx = self.begin().await?;
        // A retry is not due yet: the dispatcher recomputes its sleep when
        // the delivery task ends, and other replicas need no wake-up.
        let mut effects = Effects::default();
        let changed = apply(
            &mut tx,
            self.backend,
            &self.keys,
            &changes,
            By::Dispatch,
            now,
            &mut effects,
        )
        .await?;
        tx.commit().await?;
        self.announce(effects);
        Ok(changed)
    }
}

/// A claimed attempt whose history entry opens: the instruction, the
/// attempt number, and whether it is a reminder.
pub(super) type Opened = (InstructionId, u32, bool);

/// Opens a history entry for each claimed attempt; the previous attempt of
/// a redelivered instruction never answered, so its lease expired.
pub(super) async fn open_attempts(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    opened: &[Opened],
    now_us: i64,
) -> Result<(), StoreError> {
    let retried: Vec<String> = opened
        .iter()
        .filter(|(_, attempt, _)| *attempt > 1)
        .map(|(id, _, _)| id.to_string())
        .collect();
    if !retried.is_empty() {
        close_expired_attempts(&mut *conn, backend, retried, now_us).await?;
    }
    let mut sql = Sql::new(
        backend,
        "insert into delivery_attempts (instruction_id, attempt, started_at, result) ",
    );
    sql.select_rows(
        &[
            ("instruction_id", Col::Text),
            ("attempt", Col::Int),
            ("started_at", Col::Int),
            ("result", Col::Text),
        ],
        opened.iter().map(|(id, attempt, reminder)| {
            vec![
                Bind::from(id.to_string()),
                Bind::from(i64::from(*attempt)),
                Bind::from(now_us),
                Bind::from(
                    if *reminder {
                        AttemptResult::Reminder
                    } else {
                        AttemptResult::Pending
                    }
                    .as_str(),
                ),
            ]
        }),
    );
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// One delivery attempt, from the history table.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryAttemptRow {
    /// 1-based.
    pub attempt: u32,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// What happened.
    pub result: AttemptResult,
    /// gRPC code name of an error.
    pub error_code: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
}

impl Store {
    /// Every delivery attempt of each of `ids`, oldest first, in one read
    /// (a page of instructions would otherwise take a read per row).
    pub async fn attempts(
        &self,
        ids: &[InstructionId],
    ) -> Result<HashMap<InstructionId, Vec<DeliveryAttemptRow>>, StoreError> {
        let mut history: HashMap<InstructionId, Vec<DeliveryAttemptRow>> = HashMap::new();
        if ids.is_empty() {
            return Ok(history);
        }
        let rows = Sql::new(
            self.backend,
            "select instruction_id, attempt, started_at, finished_at, result, error_code, \
             error_message from delivery_attempts where ",
        )
        .in_list("instruction_id", ids.iter().map(ToString::to_string))
        .push(" order by instruction_id, attempt")
        .query()
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let attempt = DeliveryAttemptRow {
                attempt: super::codec::count(row, "attempt")?,
                started_at: time(row, "started_at")?,
                finished_at: opt_time(row, "finished_at")?,
                result: super::codec::parsed(row, "result", |s| s.parse().ok())?,
                error_code: row.try_get("error_code")?,
                error_message: row.try_get("error_message")?,
            };
            let id = super::codec::instruction_id(row, "instruction_id")?;
            history.entry(id).or_default().push(attempt);
        }
        Ok(history)
    }
}
