//! The one path by which an instruction changes state.
//!
//! [`apply`] turns a domain [`InstructionEvent`] into a guarded `UPDATE`:
//! the target state comes from the pure state machine, and the
//! `WHERE state IN (...)` guard from [`InstructionState::sources`], so the
//! database refuses exactly what the domain refuses, even under races. Every
//! row that changed then goes through [`after_change`]: the request row is
//! bumped (taking its lock), an event is appended, and if this was the
//! request's last open instruction the completion record is written — all in
//! the caller's transaction.

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{INSTRUCTION_COLUMNS, instruction, json, micros, state_list};
use super::events::{EventKind, append_event};
use super::records::write_record;
use crate::domain::{
    InstructionEvent, InstructionState, InstructionView, RequestStatus, Timestamp,
};

/// A value bound to a `$n` placeholder. Only the two types both backends
/// share through the `Any` driver.
#[derive(Clone, Debug)]
pub(super) enum Bind {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Bind::Int(Some(v))
    }
}
impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Self {
        Bind::Int(v)
    }
}
impl From<String> for Bind {
    fn from(v: String) -> Self {
        Bind::Text(Some(v))
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Bind::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Self {
        Bind::Text(v)
    }
}

/// SQL text with numbered placeholders and their values.
#[derive(Default)]
pub(super) struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
        }
    }
    /// Appends raw SQL (our own constants only).
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    /// Appends a placeholder bound to `v`.
    pub fn bind(&mut self, v: impl Into<Bind>) -> &mut Self {
        self.binds.push(v.into());
        self.text.push_str(&format!("${}", self.binds.len()));
        self
    }
    /// The executable query.
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.as_str()));
        for b in &self.binds {
            q = match b {
                Bind::Int(v) => q.bind(*v),
                Bind::Text(v) => q.bind(v.clone()),
            };
        }
        q
    }
}

/// Which rows a transition applies to, besides the state guard.
pub(super) enum Target<'a> {
    /// One instruction.
    One(crate::domain::InstructionId),
    /// One instruction, only while the caller's lease on this attempt holds.
    Leased {
        id: crate::domain::InstructionId,
        owner: &'a str,
        attempt: u32,
    },
}

/// Applies `event` to the targeted instruction with the extra column
/// assignments `sets` (column, value) and `raw` (SQL expressions). Returns the
/// instruction after the change, or `None` if the guard did not match
/// (wrong state, lost lease).
pub(super) async fn apply(
    conn: &mut AnyConnection,
    target: Target<'_>,
    event: InstructionEvent,
    sets: Vec<(&'static str, Bind)>,
    raw: &[&str],
    now: Timestamp,
) -> Result<Option<InstructionView>, StoreError> {
    let sources = InstructionState::sources(event);
    let Some(to) = sources.first().and_then(|s| s.apply(event)) else {
        return Ok(None);
    };
    let mut sql = Sql::new("update instructions set state = ");
    sql.bind(to.as_str());
    // Scheduling columns are meaningful in one state each; clear the others.
    if to != InstructionState::Delivering {
        sql.push(", lease_owner = null, lease_expires_at = null");
    }
    if to != InstructionState::Acknowledged {
        sql.push(", reply_due_at = null");
    }
    if to != InstructionState::Pending {
        sql.push(", next_attempt_at = null");
    }
    if to.is_terminal() {
        sql.push(", resolved_at = ").bind(micros(now));
    }
    for (col, value) in sets {
        sql.push(", ").push(col).push(" = ").bind(value);
    }
    for expr in raw {
        sql.push(", ").push(expr);
    }
    sql.push(" where state in (")
        .push(&state_list(&sources))
        .push(")");
    match target {
        Target::One(id) => {
            sql.push(" and id = ").bind(id.to_string());
        }
        Target::Leased { id, owner, attempt } => {
            sql.push(" and id = ").bind(id.to_string());
            sql.push(" and lease_owner = ").bind(owner);
            sql.push(" and attempts = ").bind(i64::from(attempt));
        }
    }
    sql.push(" returning ").push(INSTRUCTION_COLUMNS);
    let Some(row) = sql.query().fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let view = instruction(&row)?;
    after_change(conn, &view, now).await?;
    Ok(Some(view))
}

/// Records that `view` just changed: bumps its request (lock, sequence,
/// open count, RECEIVED -> IN_PROGRESS), appends the event, and writes the
/// completion record if nothing is open any more.
pub(super) async fn after_change(
    conn: &mut AnyConnection,
    view: &InstructionView,
    now: Timestamp,
) -> Result<(), StoreError> {
    let closes = i64::from(view.state.is_terminal());
    let row = Sql::new(
        "update requests set event_seq = event_seq + 1, \
         status = case when status = 'RECEIVED' then 'IN_PROGRESS' else status end, \
         open_instructions = open_instructions - ",
    )
    .bind(closes)
    .push(" where id = ")
    .bind(view.request_id.to_string())
    .push(" returning event_seq, open_instructions")
    .query()
    .fetch_one(&mut *conn)
    .await;
    let row = row?;
    use sqlx::Row;
    let seq: i64 = row.try_get("event_seq")?;
    let open: i64 = row.try_get("open_instructions")?;
    append_event(
        conn,
        view.request_id,
        seq,
        now,
        EventKind::InstructionChanged,
        RequestStatus::InProgress,
        Some(view),
    )
    .await?;
    if closes == 1 && open == 0 {
        write_record(conn, view.request_id, now).await?;
    }
    Ok(())
}

/// JSON of a value for a `Bind`.
pub(super) fn json_bind<T: serde::Serialize + ?Sized>(v: &T) -> Bind {
    Bind::Text(Some(json(v)))
}
