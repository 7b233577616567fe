//! Claims in one step or two.
//!
//! A claim leases due instructions and writes what the leases are in
//! their requests' history: each instruction's DELIVERING event, chained
//! onto its request's audit trail, and the request's bump (its sequence
//! numbers, RECEIVED to IN_PROGRESS). In one transaction
//! ([`Store::claim_many`], and every claim on SQLite) the history is
//! written under the processors' claim locks (see `super::limits`), so on
//! PostgreSQL every claim for those processors, on any replica, waits for
//! it: the request rows' locks, the events' insert and their hashing. The
//! dispatcher claims in two ([`Store::lease_many`], then
//! [`Store::write_claim_history`]): the first transaction leases, opens
//! the delivery attempts and commits, releasing the claim locks; the
//! second writes the history while the next pass may already be leasing.
//! Nothing is sent before the second commits, so a processor's answer
//! always follows its DELIVERING event.
//!
//! Between the two a lease can end. The second transaction first locks
//! the request rows, then reads the instructions: a change that committed
//! before it is seen, and one still waiting for a request row it holds
//! comes after its events. Only a lease still held as claimed gets its
//! event and is sent. One cancelled or resolved meanwhile, claimed again
//! by someone else, or whose history comes after the lease margin
//! (`latest`: too little lease left to deliver in) is neither written nor
//! sent; one still held expires and is delivered again. The cancel locks
//! the request row as well and reads the history under it
//! (`super::events::instructions_sent`): an instruction leased but never
//! written as sent gets no cancel notice, and its first delivery time is
//! cleared. The second transaction takes no
//! instruction lock, so it cannot deadlock with a transaction that holds
//! instruction rows and waits for request rows (the lock order is
//! instructions, then requests). A crash between the two, or a failed
//! second transaction, leaves leases whose attempts are open but whose
//! events are not written; nothing was sent, and the leases expire and
//! are delivered again, as after any crash mid-delivery. An instruction
//! whose expired lease is leased again and whose history shows it never
//! sent gets this lease's time as its first delivery time
//! ([`restamp_unsent`]); the first lease's time would be a lease or more
//! early. One escalated once its leases are spent, none of them sent, has
//! its first delivery time cleared ([`unstamp_unsent`]).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::{AnyConnection, Row};

use super::aftermath::{By, after_locked};
use super::claims::{ClaimKind, ClaimOrder, Claimed};
use super::codec::micros;
use super::events::instructions_sent;
use super::records::lock_requests;
use super::sql::Sql;
use super::write_tx::WriteTx;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{InstructionId, InstructionView, ProcessorId, RequestId, Timestamp};

/// What a claim leased, in the order of its orders, and whether their
/// history is still to write ([`Store::write_claim_history`]).
#[derive(Debug, Default)]
pub struct Leased {
    /// The leases, by order.
    pub claims: Vec<Vec<Claimed>>,
    /// Whether the history of `claims` is still to write.
    pub(super) unwritten: bool,
}

impl Leased {
    /// Leases whose history is written.
    pub(super) fn written(claims: Vec<Vec<Claimed>>) -> Self {
        Self {
            claims,
            unwritten: false,
        }
    }

    /// Whether the leases' history is written (nothing left for
    /// [`Store::write_claim_history`]).
    pub fn is_written(&self) -> bool {
        !self.unwritten
    }
}

/// Of `again` (the redeliveries and reminders this transaction leased,
/// holding their rows), gives each redelivery that its request's history
/// shows never sent, and that is to be sent (not one of `withheld`), the
/// first delivery time `now`, in the database and in its view: the time
/// its first lease set is that of a delivery that did not happen (the
/// replica died between the two steps, or its history came too late or
/// after the lease was lost). Only PostgreSQL claims in two steps, and
/// only an expired lease can have gone unsent, so a claim without
/// redeliveries reads nothing. The history is read under a key-share
/// lock of the request rows ([`sent_under_lock`]).
pub(super) async fn restamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    again: &mut [Claimed],
    withheld: &[InstructionId],
    now: Timestamp,
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
    let Some(sent) = sent_under_lock(conn, backend, requests).await? else {
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

/// Of `escalated` (instructions escalated because their leases expired
/// with the delivery budget spent, holding their rows), clears the first
/// delivery time of each that its request's history shows never sent,
/// in the database and in its view, and says so in its error: every lease
/// it had ended before its delivery began (on PostgreSQL, a replica died
/// between a claim's two steps, or its history came too late), so the
/// time the first lease set is that of no delivery. Read as
/// [`restamp_unsent`] reads, under a key-share lock of the request rows.
pub(super) async fn unstamp_unsent(
    conn: &mut AnyConnection,
    backend: Backend,
    escalated: &mut [InstructionView],
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
    let Some(sent) = sent_under_lock(conn, backend, requests).await? else {
        return Ok(());
    };
    stamped.retain(|v| !sent.contains(&v.id));
    let unsent = stamped;
    if unsent.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        backend,
        "update instructions set first_instructed_at = null, last_error = ",
    );
    sql.bind(NEVER_SENT)
        .push(" where ")
        .in_list("id", unsent.iter().map(|v| v.id.to_string()));
    sql.query().execute(&mut *conn).await?;
    for v in unsent {
        v.first_instructed_at = None;
        v.last_error = Some(NEVER_SENT.to_string());
    }
    Ok(())
}

/// The error of an instruction escalated with its budget spent on leases
/// that were never sent.
const NEVER_SENT: &str = "its leases ended before any delivery was sent";

/// The instructions of `requests` whose history shows them sent (see
/// [`instructions_sent`]), read under a key-share lock of the request
/// rows, which waits for a history step holding them: one still writing
/// a lease's DELIVERING event is seen. (The lock order holds: the caller
/// has its instruction rows, and a history step takes none.)
async fn sent_under_lock(
    conn: &mut AnyConnection,
    backend: Backend,
    requests: impl Iterator<Item = RequestId>,
) -> Result<Option<HashSet<InstructionId>>, StoreError> {
    let mut requests: Vec<RequestId> = requests.collect();
    requests.sort();
    requests.dedup();
    let mut locks = Sql::new(backend, "select id from requests where ");
    locks
        .in_list("id", requests.iter().map(ToString::to_string))
        .push(" order by id for key share");
    locks.query().fetch_all(&mut *conn).await?;
    instructions_sent(conn, backend, &requests).await
}

impl Store {
    /// Leases up to `limit` due instructions of `processor`, which does not
    /// poll (a pull processor), for `lease`.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        processor: &ProcessorId,
        max_reminders: u32,
        max_attempts: u32,
        limit: u32,
        owner: &str,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claimed>, StoreError> {
        let order = ClaimOrder {
            processor,
            max_reminders,
            max_attempts,
            polls: false,
            limit,
            max_in_flight: u32::MAX,
            per_second: 0,
            lease,
            aligned: false,
        };
        let mut claimed = self.claim_many(&[order], owner, now).await?;
        Ok(claimed.pop().unwrap_or_default())
    }

    /// Leases due instructions for several processors in one transaction:
    /// one statement picks every processor's first deliveries and retries,
    /// a second (only for processors with room left) redeliveries and
    /// reminders, and their history entries, request bumps and events are
    /// written once for the whole pass. A request fanned out to five
    /// processors is thus bumped once per pass, not five times in five
    /// commits. Returns the claims in the order of `orders`.
    pub async fn claim_many(
        &self,
        orders: &[ClaimOrder<'_>],
        owner: &str,
        now: Timestamp,
    ) -> Result<Vec<Vec<Claimed>>, StoreError> {
        Ok(self.lease(orders, owner, now, false).await?.claims)
    }

    /// [`Store::claim_many`] in two steps on PostgreSQL: this transaction
    /// leases and commits, and the claims' events and request bumps are
    /// written by [`Store::write_claim_history`] in a second one, outside
    /// the processors' claim locks, so that the next claim need not wait
    /// for them (see the module's doc). On SQLite, whose one writer
    /// runs transactions in turn anyway, everything is written here.
    pub async fn lease_many(
        &self,
        orders: &[ClaimOrder<'_>],
        owner: &str,
        now: Timestamp,
    ) -> Result<Leased, StoreError> {
        self.lease(orders, owner, now, self.backend == Backend::Postgres)
            .await
    }

    /// Writes the history of `leased` if [`Store::lease_many`] left it
    /// unwritten, at `now`: locks the requests, reads the instructions,
    /// and writes the events of the leases still held as claimed (still
    /// DELIVERING, same owner, same attempt). Afterwards `leased.claims`
    /// holds those, by order: the leases to send. The rest (cancelled or
    /// resolved since, claimed again by someone else), and every lease
    /// when `now` is past `latest` (too little lease left to deliver in),
    /// are neither written nor sent; one still held expires and is
    /// delivered again. A failure before the commit is tried again, twice
    /// at most, when it is transient; one at the commit is not, as the
    /// commit may have happened (the leases then expire and are delivered
    /// again). On failure `leased` is as it was.
    pub async fn write_claim_history(
        &self,
        leased: &mut Leased,
        now: Timestamp,
        latest: Timestamp,
    ) -> Result<(), StoreError> {
        if !leased.unwritten {
            return Ok(());
        }
        if now > latest {
            leased.claims.iter_mut().for_each(Vec::clear);
            leased.unwritten = false;
            return Ok(());
        }
        let mut tries = 0;
        let (tx, effects, kept) = loop {
            tries += 1;
            match self.history(&leased.claims, now).await {
                Ok(written) => break written,
                Err(e) if tries < 3 && e.is_transient() => {
                    tracing::info!(error = %e, tries, "writing the claims' history failed; retrying");
                }
                Err(e) => return Err(e),
            }
        };
        tx.commit().await?;
        leased.claims = kept;
        leased.unwritten = false;
        self.announce(effects);
        Ok(())
    }

    /// The statements of [`Store::write_claim_history`], short of the
    /// commit: the open transaction, what it changed, and the leases to
    /// send.
    #[tracing::instrument(name = "store.claim_history", skip_all, fields(sent))]
    async fn history(
        &self,
        claims: &[Vec<Claimed>],
        now: Timestamp,
    ) -> Result<(WriteTx, Effects, Vec<Vec<Claimed>>), StoreError> {
        let claimed: Vec<&InstructionView> =
            claims.iter().flatten().map(|c| &c.instruction).collect();
        let mut requests: Vec<String> = claimed.iter().map(|v| v.request_id.to_string()).collect();
        requests.sort();
        requests.dedup();
        let ids: Vec<String> = claimed.iter().map(|v| v.id.to_string()).collect();
        let mut tx = self.begin().await?;
        // Request rows first: a change to these instructions that commits
        // after this read waits for them, and so follows these events.
        let rows = lock_requests(&mut tx, self.backend, requests).await?;
        let mut sql = Sql::new(
            self.backend,
            "select id, lease_owner, attempts from instructions where state = 'DELIVERING' and ",
        );
        sql.in_list("id", ids);
        let mut held = HashSet::new();
        for row in sql.query().fetch_all(&mut *tx).await? {
            let id: String = row.try_get("id")?;
            let owner: Option<String> = row.try_get("lease_owner")?;
            let attempts: i64 = row.try_get("attempts")?;
            held.insert((id, owner, attempts));
        }
        let still_held = |c: &&Claimed| {
            let lease = (
                c.instruction.id.to_string(),
                Some(c.owner.clone()),
                i64::from(c.attempt()),
            );
            held.contains(&lease)
        };
        let kept: Vec<Vec<Claimed>> = claims
            .iter()
            .map(|list| list.iter().filter(still_held).cloned().collect())
            .collect();
        let events: Vec<InstructionView> = kept
            .iter()
            .flatten()
            .map(|c| c.instruction.clone())
            .collect();
        let mut effects = Effects::default();
        after_locked(
            &mut tx,
            self.backend,
            &self.keys,
            &events,
            By::Dispatch,
            now,
            &mut effects,
            &rows,
        )
        .await?;
        tracing::Span::current().record("sent", events.len());
        Ok((tx, effects, kept))
    }
}
