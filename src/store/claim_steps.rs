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
//! sent gets this lease's time as its first delivery time; the first
//! lease's time would be a lease or more early. One that escalates
//! instead, none of its leases sent, has its first delivery time cleared
//! (see `super::sent`).

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;

use super::aftermath::{By, after_locked};
use super::claims::{ClaimOrder, Claimed};
use super::records::lock_requests;
use super::sql::Sql;
use super::write_tx::WriteTx;
use super::{Backend, Effects, Store, StoreError};
use crate::domain::{InstructionView, ProcessorId, Timestamp};

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
