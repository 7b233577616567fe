//! The one path by which instructions change state, one or a whole batch at
//! a time.
//!
//! [`apply`] turns domain [`InstructionEvent`]s into guarded `UPDATE`s: the
//! target state comes from the pure state machine, and the
//! `WHERE state IN (...)` guard from [`InstructionState::sources`], so the
//! database refuses exactly what the domain refuses, even under races. A
//! batch is written with one statement per target state (per-row values ride
//! in one JSON parameter unpacked as `v`), so recording 200 delivery results
//! costs a handful of statements and one commit, not 200 transactions.
//!
//! Every instruction that changed then goes through [`after_changes`]: its
//! request row is bumped (taking the row lock that serialises changes to one
//! request across replicas), its event appended, and requests whose last
//! open instruction just closed get their completion record — all in the
//! caller's transaction.
//!
//! Lock order, on PostgreSQL, is always: instruction rows by id, then
//! request rows by id. Every transaction follows it, so none can deadlock
//! another.

use sqlx::AnyConnection;

use super::aftermath::{By, after_changes, lock_rows};
use super::codec::{instruction, json, micros, qualified, state_list};
use super::sql::{Bind, Col, Sql};
use super::{Backend, Effects, StoreError};
use crate::domain::{
    AttemptResult, InstructionEvent, InstructionId, InstructionResult, InstructionState,
    InstructionView, ResolvedBy, Timestamp,
};
use crate::seal::Keyring;

/// How the open delivery-attempt entry of a changed instruction is closed.
#[derive(Clone, Debug)]
pub(super) struct AttemptClose {
    /// How the attempt ended.
    pub result: AttemptResult,
    /// gRPC code name of an error.
    pub code: Option<String>,
    /// Error message.
    pub message: Option<String>,
}

/// One requested change to one instruction.
#[derive(Clone, Debug)]
pub(super) struct Change {
    /// The instruction.
    pub id: InstructionId,
    /// What happens to it.
    pub event: InstructionEvent,
    /// Apply only while this lease (owner, attempt) still holds.
    pub fence: Option<(String, u32)>,
    /// PENDING: when the next attempt is due (`None`: never by itself).
    pub next_attempt_at: Option<Timestamp>,
    /// ACKNOWLEDGED: when the outcome is due.
    pub reply_due_at: Option<Timestamp>,
    /// Set if not yet set (the first acknowledgement counts).
    pub acknowledged_at: Option<Timestamp>,
    /// Replaces the last error when given.
    pub last_error: Option<String>,
    /// The final result (terminal outcomes).
    pub result: Option<InstructionResult>,
    /// Who recorded the final result.
    pub resolved_by: Option<ResolvedBy>,
    /// The result's data records, sealed (they are not in `result`).
    pub sealed_records: Option<String>,
    /// How many data records came with the result.
    pub data_records: u32,
    /// Reset the retry and reminder budget (operator re-arm).
    pub rearm: bool,
    /// Give the attempt just made back to the retry budget (a failed
    /// circuit-breaker probe: the outage, not the instruction, failed).
    pub refund: bool,
    /// Clear the first delivery time: the instruction was leased but never
    /// sent (a cancel between a lease and its history, see
    /// `super::claim_steps`).
    pub unsent: bool,
    /// Close the open history entry this way.
    pub close_attempt: Option<AttemptClose>,
}

impl Change {
    /// A change with no column values yet.
    pub fn new(id: InstructionId, event: InstructionEvent) -> Self {
        Self {
            id,
            event,
            fence: None,
            next_attempt_at: None,
            reply_due_at: None,
            acknowledged_at: None,
            last_error: None,
            result: None,
            resolved_by: None,
            sealed_records: None,
            data_records: 0,
            rearm: false,
            refund: false,
            unsent: false,
            close_attempt: None,
        }
    }
}

/// The target state of an event (the same from every legal source).
fn target(event: InstructionEvent) -> Option<InstructionState> {
    InstructionState::sources(event)
        .first()
        .and_then(|s| s.apply(event))
}

/// Applies every change whose guard matches; returns the instructions that
/// changed (the others were in the wrong state or had lost their lease).
pub(super) async fn apply(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    changes: &[Change],
    by: By<'_>,
    now: Timestamp,
    effects: &mut Effects,
) -> Result<Vec<InstructionView>, StoreError> {
    lock_rows(
        conn,
        backend,
        "instructions",
        changes.iter().map(|c| c.id.to_string()).collect(),
    )
    .await?;
    // One statement per event: the guard and the target differ by event.
    let mut by_event: Vec<(InstructionEvent, Vec<&Change>)> = Vec::new();
    for c in changes {
        match by_event.iter_mut().find(|(e, _)| *e == c.event) {
            Some((_, group)) => group.push(c),
            None => by_event.push((c.event, vec![c])),
        }
    }
    let mut changed = Vec::with_capacity(changes.len());
    for (event, group) in by_event {
        let Some(to) = target(event) else { continue };
        let mut sql = Sql::new(backend, "with v as (");
        sql.select_rows(
            &[
                ("id", Col::Text),
                ("owner", Col::Text),
                ("attempt", Col::Int),
                ("next_attempt_at", Col::Int),
                ("reply_due_at", Col::Int),
                ("acknowledged_at", Col::Int),
                ("last_error", Col::Text),
                ("result", Col::Text),
                ("resolved_by", Col::Text),
                ("sealed_records", Col::Text),
                ("data_records", Col::Int),
                ("rearm", Col::Int),
                ("refund", Col::Int),
                ("unsent", Col::Int),
            ],
            group.iter().map(|c| {
                vec![
                    Bind::from(c.id.to_string()),
                    Bind::from(c.fence.as_ref().map(|f| f.0.clone())),
                    Bind::from(c.fence.as_ref().map(|f| i64::from(f.1))),
                    Bind::from(c.next_attempt_at.map(micros)),
                    Bind::from(c.reply_due_at.map(micros)),
                    Bind::from(c.acknowledged_at.map(micros)),
                    Bind::from(c.last_error.clone()),
                    Bind::from(c.result.as_ref().map(json)),
                    Bind::from(c.resolved_by.as_ref().map(json)),
                    Bind::from(c.sealed_records.clone()),
                    Bind::from(i64::from(c.data_records)),
                    Bind::from(i64::from(c.rearm)),
                    Bind::from(i64::from(c.refund)),
                    Bind::from(i64::from(c.unsent)),
                ]
            }),
        );
        sql.push(") update instructions set state = ")
            .bind(to.as_str())
            .push(
                ", lease_owner = null, lease_expires_at = null, \
                 next_attempt_at = v.next_attempt_at, reply_due_at = v.reply_due_at, \
                 acknowledged_at = coalesce(instructions.acknowledged_at, v.acknowledged_at), \
                 last_error = coalesce(v.last_error, instructions.last_error), \
                 result = v.result, resolved_by = v.resolved_by, \
                 sealed_records = v.sealed_records, \
                 attempts_since_arm = case when v.rearm = 1 then 0 \
                 else instructions.attempts_since_arm - v.refund end, \
                 reminders = case when v.rearm = 1 then 0 else instructions.reminders end, \
                 first_instructed_at = case when v.unsent = 1 then null \
                 else instructions.first_instructed_at end, \
                 escalate_at = case when v.rearm = 1 and instructions.escalate_at <= ",
            )
            .bind(micros(now))
            .push(
                " then null else instructions.escalate_at end, \
                 resolved_at = ",
            )
            .bind(to.is_terminal().then(|| micros(now)))
            // A final result counts the records uploaded in chunks too (the
            // row lock taken above keeps any from coming in after).
            // Only access and portability instructions have chunks: the
            // others (most of them) never look.
            .push(if to.is_terminal() {
                ", data_records = v.data_records + case \
                 when instructions.kind in ('ACCESS', 'PORTABILITY') then coalesce(( \
                 select sum(c.records) from data_record_chunks c \
                 where c.instruction_id = instructions.id), 0) else 0 end"
            } else {
                ", data_records = v.data_records"
            })
            // A final instruction is never sent again: the identities it
            // carried go with the same update (see `store::erase`).
            .push(if to.is_terminal() {
                ", payload = null"
            } else {
                ""
            })
            .push(" from v where instructions.id = v.id and ")
            .in_cte("instructions.id", "v", "id")
            // SQLite: the unary `+` keeps the state guard off the
            // (state, id) index. Offered a large batch, its planner drove
            // the update from that index (every PENDING row, then the batch
            // for each) instead of looking the batch up by id: a cost that
            // grew with the backlog (0.8 ms a row at 75,000 pending).
            .push(match backend {
                Backend::Sqlite => " and +instructions.state in (",
                Backend::Postgres => " and instructions.state in (",
            })
            .push(&state_list(&InstructionState::sources(event)))
            .push(
                ") and (v.owner is null or (instructions.lease_owner = v.owner \
                 and instructions.attempts = v.attempt)) returning ",
            )
            .push(&qualified("instructions"));
        for row in sql.query().fetch_all(&mut *conn).await? {
            changed.push(instruction(&row)?);
        }
    }
    close_attempts(conn, backend, changes, &changed, now).await?;
    after_changes(conn, backend, keys, &changed, by, now, effects).await?;
    Ok(changed)
}

/// Closes the open history entries of the instructions that changed: the
/// fenced attempt for dispatcher results, any open one for callbacks.
async fn close_attempts(
    conn: &mut AnyConnection,
    backend: Backend,
    changes: &[Change],
    changed: &[InstructionView],
    now: Timestamp,
) -> Result<(), StoreError> {
    let closes: Vec<(&Change, &AttemptClose)> = changes
        .iter()
        .filter(|c| changed.iter().any(|v| v.id == c.id))
        .filter_map(|c| c.close_attempt.as_ref().map(|a| (c, a)))
        .collect();
    if closes.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(backend, "with v as (");
    sql.select_rows(
        &[
            ("id", Col::Text),
            ("attempt", Col::Int),
            ("result", Col::Text),
            ("code", Col::Text),
            ("message", Col::Text),
        ],
        closes.iter().map(|(c, a)| {
            vec![
                Bind::from(c.id.to_string()),
                Bind::from(c.fence.as_ref().map_or(0, |f| i64::from(f.1))),
                Bind::from(a.result.as_str()),
                Bind::from(a.code.clone()),
                Bind::from(a.message.clone()),
            ]
        }),
    );
    sql.push(
        ") update delivery_attempts set result = v.result, error_code = v.code, \
         error_message = v.message, finished_at = ",
    )
    .bind(micros(now))
    .push(
        " from v where delivery_attempts.instruction_id = v.id and \
         (delivery_attempts.attempt = v.attempt or (v.attempt = 0 and \
         delivery_attempts.result in (",
    )
    .push(&open_results())
    .push("))) and ")
    .in_cte("delivery_attempts.instruction_id", "v", "id");
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// Closes the open history attempts (a delivery's, or a reminder's: a
/// poll's) of the instructions `ids` as `lease_expired` at `now_us`: their
/// leases ran out without an answer.
pub(super) async fn close_expired_attempts(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    ids: impl IntoIterator<Item = String>,
    now_us: i64,
) -> Result<(), StoreError> {
    let mut sql = Sql::new(backend, "update delivery_attempts set result = ");
    sql.bind(AttemptResult::LeaseExpired.as_str())
        .push(", finished_at = ")
        .bind(now_us)
        .push(&format!(" where result in ({}) and ", open_results()))
        .in_list("instruction_id", ids);
    sql.query().execute(&mut *conn).await?;
    Ok(())
}

/// `'pending', 'reminder'`: the history results of attempts still open.
/// Our own constants, never input, so inlining them is safe.
fn open_results() -> String {
    AttemptResult::OPEN
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
