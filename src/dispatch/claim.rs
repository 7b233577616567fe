//! A pass's claim and the start of its deliveries. On PostgreSQL the
//! claim commits its leases first and a task of the in-flight set writes
//! their history and then starts the deliveries (see
//! `crate::store::Leased`), so the dispatcher can begin its next pass
//! while that history is written; on SQLite both are one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::concurrency::Ticket;
use super::slots::Slot;
use super::{Dispatcher, InFlight};
use crate::domain::{Processor, ProcessorId, Timestamp};
use crate::store::{ClaimKind, ClaimOrder, Claimed};

impl Dispatcher {
    /// Claims `orders` (one per processor of `push`, each within its
    /// `slots`) and, once their history is written, starts each delivery
    /// on its own task in `set`. Returns how many it claimed, and whether
    /// some processor filled every slot it had. On PostgreSQL the history
    /// is written by a task of the set after the leases commit (see
    /// `Leased`), so the next pass need not wait for it.
    pub(super) async fn claim_and_deliver(
        &self,
        push: Vec<(&Processor, Duration)>,
        slots: Vec<Vec<Slot>>,
        orders: &[ClaimOrder<'_>],
        probes: &HashMap<ProcessorId, Duration>,
        now: Timestamp,
        set: &InFlight,
    ) -> Result<(usize, bool), crate::store::StoreError> {
        let started = Instant::now();
        let mut leased = self.store.lease_many(orders, &self.owner, now).await?;
        let took = started.elapsed();
        let mut claimed_total = 0;
        let mut saturated = false;
        let mut batches = Vec::with_capacity(push.len());
        for (((p, timeout), slots), claimed) in push.into_iter().zip(slots).zip(&leased.claims) {
            claimed_total += claimed.len();
            saturated |= !slots.is_empty() && claimed.len() == slots.len();
            self.note_claim(p, claimed.len(), slots.len());
            // The leases are counted once they are to be sent (see `start`).
            self.metrics.claim_finished(took);
            let probe = probes.get(&p.spec.id).copied();
            if probe.is_some() && claimed.is_empty() {
                self.unused_probe(p, timeout, now).await;
            }
            let ticket = self.ticket(p, slots.len() - claimed.len());
            // The slots it did not claim go back here, not after the
            // history: the next pass may need them.
            let mut slots = slots;
            slots.truncate(claimed.len());
            batches.push(Batch {
                ticket,
                timeout,
                processor: Arc::new(p.clone()),
                slots,
                probe,
            });
        }
        if leased.is_written() {
            self.start(leased.claims, batches, set, now).await;
        } else {
            // The history must be written while the leases have at least
            // a delivery's timeout left: within the lease margin.
            let latest = now + self.config.lease_margin;
            let (this, tasks) = (self.clone(), set.clone());
            set.spawn(async move {
                let now = this.clock.now();
                let started = Instant::now();
                match this.store.write_claim_history(&mut leased, now, latest).await {
                    Ok(()) => {
                        this.metrics.claim_history_written(started.elapsed());
                        this.start(leased.claims, batches, &tasks, now).await;
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "could not write the claims' history; they are delivered when their leases expire"
                        );
                        this.give_back_probes(&batches, now).await;
                    }
                }
            });
        }
        Ok((claimed_total, saturated))
    }

    /// Gives back the probes of `batches`: their calls will not be made.
    async fn give_back_probes(&self, batches: &[Batch], now: Timestamp) {
        for b in batches.iter().filter(|b| b.probe.is_some()) {
            self.unused_probe(&b.processor, b.timeout, now).await;
        }
    }

    /// Counts each of `claims` (by batch) and starts it on its own task in
    /// `set`; the slots left over are released as they drop here, and a
    /// probe whose lease was lost since it was claimed is given back.
    async fn start(
        &self,
        claims: Vec<Vec<Claimed>>,
        batches: Vec<Batch>,
        set: &InFlight,
        now: Timestamp,
    ) {
        let mut lost = Vec::new();
        for (claimed, batch) in claims.into_iter().zip(batches) {
            if claimed.is_empty() {
                lost.push(batch);
                continue;
            }
            let kinds: Vec<ClaimKind> = claimed.iter().map(|c| c.kind).collect();
            self.metrics
                .instructions_claimed(batch.processor.spec.id.as_str(), &kinds);
            for (c, slot) in claimed.into_iter().zip(batch.slots) {
                let (this, p) = (self.clone(), batch.processor.clone());
                let (probe, ticket) = (batch.probe, batch.ticket);
                set.spawn(async move {
                    this.deliver(&p, c, slot, probe, ticket).await;
                });
            }
        }
        self.give_back_probes(&lost, now).await;
    }
}

/// One processor's part of a pass: the slots reserved for its claims,
/// whether it probes a breaker, and its adaptive limit's ticket.
struct Batch {
    processor: Arc<Processor>,
    /// Its delivery timeout.
    timeout: Duration,
    slots: Vec<Slot>,
    probe: Option<Duration>,
    ticket: Option<Ticket>,
}
