//! Which instructions were sent, by their requests' history, and the
//! first delivery times that follow from it. A lease sets an instruction's
//! first delivery time; on PostgreSQL its DELIVERING event, written by a
//! claim's second step (see `super::claim_steps`), is what says its
//! delivery may have begun. A lease that ended without one sent nothing,
//! so the time it set is corrected: given to the lease that does deliver
//! ([`restamp_unsent`]), or cleared when the instruction escalates first
//! ([`unstamp_unsent`]).

use std::collections::HashSet;

use sqlx::AnyConnection;

use super::claims::{ClaimKind, Claimed};
use super::codec::micros;
use super::events::instructions_sent;
use super::sql::Sql;
use super::{Backend, StoreError};
use crate::domain::{InstructionId, InstructionView, RequestId, Timestamp};

/// Of `again` (the redeliveries and reminders this transaction leased,
/// holding their rows), gives each redelivery that its request's history
/// shows never sent, and that is to be sent (not one of `withheld`), the
/// first delivery time `now`, in the database and in its view: the time
/// its first lease set is that of a delivery that did not happen (the
/// replica died between the two steps, or its history came too late or
/// after the lease was lost). Only PostgreSQL claims in two steps, and
/// only an expired lease can have gone unsent, so a claim without
/// redeliveries reads nothing. The history is read under a lock of the
/// request rows as strong as `then` needs ([`sent_under_lock`]).
pub(super) async fn restamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    again: &mut [Claimed],
    withheld: &[InstructionId],
    now: Timestamp,
    then: Then,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let mut redelivered: Vec<&mut Claimed> = again
        .iter_mut()
        .filter(|c| c.kind == ClaimKind::Retry && !withheld.contains(&c.instruction.id))
        .collect();
    if redelivered.is_empty() {
        return Ok(());
    }
    let requests = redelivered.iter().map(|c| c.instruction.request_id);
    // Not known: left as it is.
    let Some(sent) = sent_under_lock(conn, backend, requests, then).await? else {
        return Ok(());
    };
    redelivered.retain(|c| !sent.contains(&c.instruction.id));
    let unsent = redelivered;
    if unsent.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(backend, "update instructions set first_instructed_at = ");
    sql.bind(micros(now))
        .push(" where ")
        .in_list("id", unsent.iter().map(|c| c.instruction.id.to_string()));
    sql.query().execute(&mut *conn).await?;
    for c in unsent {
        c.instruction.first_instructed_at = Some(now);
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
/// records the changes. Where an event does not read, which were sent is
/// not known and every time is left as it is.
pub(super) async fn unstamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    escalated: &mut [InstructionView],
    error: Option<&str>,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let mut stamped: Vec<&mut InstructionView> = escalated
        .iter_mut()
        .filter(|v| v.first_instructed_at.is_some())
        .collect();
    if stamped.is_empty() {
        return Ok(());
    }
    let requests = stamped.iter().map(|v| v.request_id);
    let Some(sent) = sent_under_lock(conn, backend, requests, Then::Records).await? else {
        return Ok(());
    };
    stamped.retain(|v| !sent.contains(&v.id));
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

/// What a transaction that reads which instructions were sent does next
/// with their request rows, which decides how it locks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Then {
    /// Records changes of them (`super::aftermath`), under the update
    /// lock it takes here: were it to take a key-share lock first, two
    /// such transactions sharing a request would each hold one and wait
    /// for the other's to end before upgrading it, a deadlock.
    Records,
    /// Leaves them alone: a key-share lock, which any number share.
    Reads,
}

impl Then {
    /// What a lease transaction does: it records changes unless it leaves
    /// the history to the next transaction (`split`) and has nothing to
    /// escalate.
    pub(super) fn after_lease(split: bool, escalating: bool) -> Self {
        match split && !escalating {
            true => Then::Reads,
            false => Then::Records,
        }
    }
}

/// The instructions of `requests` whose history shows them sent (see
/// [`instructions_sent`]), read under a lock of the request rows (in id
/// order, as every transaction takes them) as strong as `then` needs,
/// which waits for a history step holding them: one still writing a
/// lease's DELIVERING event is seen. (The lock order holds: the caller has
/// its instruction rows, and a history step takes none.)
async fn sent_under_lock(
    conn: &mut AnyConnection,
    backend: Backend,
    requests: impl Iterator<Item = RequestId>,
    then: Then,
) -> Result<Option<HashSet<InstructionId>>, StoreError> {
    let mut requests: Vec<RequestId> = requests.collect();
    requests.sort();
    requests.dedup();
    let strength = match then {
        Then::Records => " order by id for update",
        Then::Reads => " order by id for key share",
    };
    let mut locks = Sql::new(backend, "select id from requests where ");
    locks
        .in_list("id", requests.iter().map(ToString::to_string))
        .push(strength);
    locks.query().fetch_all(&mut *conn).await?;
    instructions_sent(conn, backend, &requests).await
}
