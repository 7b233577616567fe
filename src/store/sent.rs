//! Which instructions were sent, by their requests' history, and the
//! first delivery times that follow from it. A lease sets an instruction's
//! first delivery time; on PostgreSQL its DELIVERING event, written by a
//! claim's second step (see `super::claim_steps`), is what says its
//! delivery may have begun. A lease that ended without one sent nothing,
//! so the time it set is corrected: given to the lease that does deliver
//! ([`restamp_unsent`]), or cleared when the instruction escalates first
//! ([`unstamp_unsent`]). A lease whose payload does not open is escalated
//! in the lease's transaction without being sent, on either backend, and
//! gets no DELIVERING event: its time is cleared too unless an earlier
//! lease was, or may have been, sent ([`restamp_unsent`]).

use sqlx::AnyConnection;

use super::claims::{ClaimKind, Claimed};
use super::codec::micros;
use super::events::{Sent, instructions_sent};
use super::sql::Sql;
use super::transition::Change;
use super::{Backend, StoreError};
use crate::domain::{InstructionId, InstructionView, RequestId, Timestamp};

/// Settles the first delivery times of a lease transaction's claims by
/// their requests' history. Of `claimed` (every instruction this
/// transaction leased, holding their rows; the redeliveries and reminders
/// from `first_picks` on), gives each redelivery that the history shows
/// never sent, and that is to be sent (not one of `withheld`), the first
/// delivery time `now`, in the database and in its view: the time its
/// first lease set is that of a delivery that did not happen (the replica
/// died between the two steps, or its history came too late or after the
/// lease was lost). Only PostgreSQL claims in two steps, and only an
/// expired lease can have gone unsent, so there a claim without
/// redeliveries reads nothing for them. `withheld` are the changes that
/// escalate claims instead of sending them (their payloads do not open),
/// on both backends: each is marked unsent, so that the escalation clears
/// the time this lease set, when this was its first lease, or when it was
/// a retry that the history shows never sent (a reminder's was: it was
/// acknowledged). On PostgreSQL the history is read under the locks of
/// [`sent_under_lock`], which also takes those of the requests whose
/// changes the transaction records afterwards: every claim's, or when it
/// leaves the claims' history to the next transaction (`split`) only the
/// escalated ones'. A claim in one step that escalates takes them all
/// here even when it reads nothing, as its escalations' requests would
/// otherwise be locked after the others'.
pub(super) async fn restamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    claimed: &mut [Claimed],
    first_picks: usize,
    withheld: &mut [Change],
    now: Timestamp,
    split: bool,
) -> Result<(), StoreError> {
    let withheld_ids: Vec<InstructionId> = withheld.iter().map(|c| c.id).collect();
    let is_withheld = |id: InstructionId| withheld_ids.contains(&id);
    let redelivery = |(i, c): &(usize, &Claimed)| {
        backend == Backend::Postgres
            && *i >= first_picks
            && c.kind == ClaimKind::Retry
            && !is_withheld(c.instruction.id)
    };
    let withheld_retry = |c: &Claimed| is_withheld(c.instruction.id) && c.kind == ClaimKind::Retry;
    let read: Vec<RequestId> = claimed
        .iter()
        .enumerate()
        .filter(|ic| redelivery(ic) || withheld_retry(ic.1))
        .map(|(_, c)| c.instruction.request_id)
        .collect();
    // A claim in one step that escalates some of its claims records their
    // requests after the others': it takes them all in the same statement,
    // even with nothing to read.
    let escalates_after = !split && !withheld.is_empty();
    let sent = match backend {
        Backend::Postgres if !read.is_empty() || escalates_after => {
            let recorded: Vec<RequestId> = claimed
                .iter()
                .filter(|c| !split || is_withheld(c.instruction.id))
                .map(|c| c.instruction.request_id)
                .collect();
            sent_under_lock(conn, backend, &read, &recorded).await?
        }
        // One writer: no claim's history is in flight beside this one.
        Backend::Sqlite if !read.is_empty() => instructions_sent(conn, backend, &read).await?,
        // Nothing to read: no redelivery, no withheld retry.
        _ => Sent::default(),
    };
    // Where the history does not say, the time is left as it is.
    let never = |c: &Claimed| sent.never(c.instruction.id, c.instruction.request_id);
    for c in withheld.iter_mut() {
        let Some(claim) = claimed.iter().find(|claim| claim.instruction.id == c.id) else {
            continue;
        };
        c.unsent = match claim.kind {
            ClaimKind::First => true,
            ClaimKind::Retry => never(claim),
            ClaimKind::Reminder => false,
        };
    }
    let unsent: Vec<usize> = claimed
        .iter()
        .enumerate()
        .filter(|ic| redelivery(ic) && never(ic.1))
        .map(|(i, _)| i)
        .collect();
    if unsent.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(backend, "update instructions set first_instructed_at = ");
    sql.bind(micros(now)).push(" where ").in_list(
        "id",
        unsent
            .iter()
            .map(|&i| claimed[i].instruction.id.to_string()),
    );
    sql.query().execute(&mut *conn).await?;
    for i in unsent {
        claimed[i].instruction.first_instructed_at = Some(now);
    }
    Ok(())
}

/// Of `escalated` (instructions this transaction escalated, holding their
/// rows, and whose changes it records next), clears the first delivery
/// time of each that its request's history shows never sent, in the
/// database and in its view, and with `error` says so in its error too:
/// every lease it had ended before its delivery began (on PostgreSQL, a
/// replica died between a claim's two steps, or its history came too
/// late), so the time the first lease set is that of no delivery. Read as
/// [`restamp_unsent`] reads, the request rows locked for the update that
/// records the changes. Where an event of a request does not read, which
/// of its instructions were sent is not known and their times are left as
/// they are.
pub(super) async fn unstamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    escalated: &mut [InstructionView],
    error: Option<&str>,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    // The changes of every one of them are recorded next.
    let recorded: Vec<RequestId> = escalated.iter().map(|v| v.request_id).collect();
    let mut stamped: Vec<&mut InstructionView> = escalated
        .iter_mut()
        .filter(|v| v.first_instructed_at.is_some())
        .collect();
    if stamped.is_empty() {
        return Ok(());
    }
    let read: Vec<RequestId> = stamped.iter().map(|v| v.request_id).collect();
    let sent = sent_under_lock(conn, backend, &read, &recorded).await?;
    stamped.retain(|v| sent.never(v.id, v.request_id));
    let unsent = stamped;
    if unsent.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        backend,
        "update instructions set first_instructed_at = null",
    );
    if let Some(error) = error {
        sql.push(", last_error = ").bind(error);
    }
    sql.push(" where ")
        .in_list("id", unsent.iter().map(|v| v.id.to_string()));
    sql.query().execute(&mut *conn).await?;
    for v in unsent {
        v.first_instructed_at = None;
        if let Some(error) = error {
            v.last_error = Some(error.to_string());
        }
    }
    Ok(())
}

/// The error of an instruction escalated with its budget spent on leases
/// that were never sent.
pub(super) const NEVER_SENT: &str = "its leases ended before any delivery was sent";

/// The instructions of `read` whose history shows them sent (see
/// [`instructions_sent`]), read under locks of the request rows of `read`
/// and of `recorded` (those whose changes the transaction records next),
/// all taken in one statement, in id order as every transaction takes
/// them: a transaction that locked some request rows and then others
/// could hold a row another waits for while it waits for one that other
/// holds. The lock is the update lock when anything is recorded, for the
/// update that follows, as two transactions taking a shared lock first
/// would each wait for the other's to end before upgrading it; otherwise
/// a key-share lock, which any number share. Either waits for a history
/// step holding the rows, so one still writing a lease's DELIVERING event
/// is seen. (The caller holds its instruction rows, and a history step
/// takes none.) With nothing to read it only locks.
async fn sent_under_lock(
    conn: &mut AnyConnection,
    backend: Backend,
    read: &[RequestId],
    recorded: &[RequestId],
) -> Result<Sent, StoreError> {
    let mut locked: Vec<RequestId> = read.iter().chain(recorded).copied().collect();
    locked.sort();
    locked.dedup();
    let strength = match recorded.is_empty() {
        false => " order by id for update",
        true => " order by id for key share",
    };
    let mut locks = Sql::new(backend, "select id from requests where ");
    locks
        .in_list("id", locked.iter().map(ToString::to_string))
        .push(strength);
    locks.query().fetch_all(&mut *conn).await?;
    match read.is_empty() {
        true => Ok(Sent::default()),
        false => instructions_sent(conn, backend, read).await,
    }
}
