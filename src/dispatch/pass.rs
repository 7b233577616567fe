//! One dispatcher pass: escalate overdue work, share the free delivery
//! slots out between push processors (leaving out those whose circuit
//! breaker is open), claim for all of them in one transaction, start each
//! delivery on its own task, and send due cancel notices; and how long to
//! sleep after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{Dispatcher, Pass, breaker, concurrency};
use crate::domain::Processor;
use crate::store::{Budget, ClaimKind, ClaimOrder};

impl Dispatcher {
    /// How long to sleep: until the earliest due instruction or cancel
    /// notice, at most the poll interval.
    pub(super) async fn sleep_for(&self) -> Duration {
        let due = self.store.next_due().await.ok().flatten();
        let notice = match self.notices_waiting.load(Ordering::Relaxed) {
            true => self.store.next_cancel_notice().await.ok().flatten(),
            false => None,
        };
        match due.into_iter().chain(notice).min() {
            Some(due) => (due - self.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.config.poll_interval),
            None => self.config.poll_interval,
        }
    }

    /// Escalates overdue work and claims due work for every processor, all
    /// processors in one claim transaction.
    pub(super) async fn tick(
        &self,
        set: &mut JoinSet<()>,
    ) -> Result<Pass, crate::store::StoreError> {
        self.metrics.dispatch_pass();
        let processors = self.store.all_processors().await?;
        let now = self.clock.now();
        let budgets: Vec<_> = processors
            .iter()
            .map(|p| Budget {
                processor: &p.spec.id,
                max_reminders: p.spec.reminder_budget(),
                max_attempts: p.spec.retry_policy.max_attempts,
            })
            .collect();
        self.store.escalate_overdue(&budgets, now).await?;
        // Free slots are shared out fairly, so the first processor of a pass
        // cannot take them all and leave the others to claim a few at a time.
        let mut push: Vec<(&Processor, Duration)> = processors
            .iter()
            .filter_map(|p| p.spec.adapter.push_timeout().map(|t| (p, t)))
            .collect();
        // Open breakers leave their processors out of the pass; a
        // half-open one lets this replica probe with one delivery.
        let (any_breaker, any_notice) = self.store.side_work().await?;
        self.notices_waiting.store(any_notice, Ordering::Relaxed);
        let breakers = if any_breaker {
            self.store.breakers().await?
        } else {
            HashMap::new()
        };
        let mut probes = HashMap::new();
        if !breakers.is_empty() {
            let mut gated = Vec::with_capacity(push.len());
            for (p, timeout) in push {
                match self
                    .gate(p, &breakers, timeout + self.config.lease_margin, now)
                    .await?
                {
                    breaker::Gate::Closed => gated.push((p, timeout)),
                    breaker::Gate::Probe(cooldown) => {
                        probes.insert(p.spec.id.clone(), cooldown);
                        gated.push((p, timeout));
                    }
                    breaker::Gate::Open => {}
                }
            }
            push = gated;
        }
        // Every processor gets the same share, rounded down: the remainder
        // (fewer slots than processors) waits for the next pass. Processors
        // given equal counts take the same requests from their queues, so a
        // request fanned out to them is claimed, and then recorded, in one
        // transaction each; handing the remainder to the first few split
        // one or two requests at every pass, whose rows the next claim and
        // the recorder then both locked, each waiting for the other's
        // commit. Only when there are fewer free slots than processors does
        // a processor go without in a pass; who goes first rotates, so none
        // goes without twice in a row.
        if !push.is_empty() {
            let first = self.passes.fetch_add(1, Ordering::Relaxed) % push.len();
            push.rotate_left(first);
        }
        let cap = self.cap(now).await?;
        let mut free = self.free_under(cap);
        let share = (free / push.len().max(1)).max(1);
        let slots: Vec<_> = push
            .iter()
            .map(|(p, _)| {
                let probe = probes.contains_key(&p.spec.id);
                let slots =
                    self.reserve(p, share.min(free).min(if probe { 1 } else { usize::MAX }));
                free -= slots.len();
                slots
            })
            .collect();
        let orders: Vec<ClaimOrder> = push
            .iter()
            .zip(&slots)
            .map(|((p, timeout), slots)| ClaimOrder {
                processor: &p.spec.id,
                max_reminders: p.spec.reminder_budget(),
                max_attempts: p.spec.retry_policy.max_attempts,
                limit: slots.len() as u32,
                max_in_flight: p.spec.max_in_flight.unwrap_or(concurrency::CEILING),
                per_second: p.spec.max_deliveries_per_second,
                lease: *timeout + self.config.lease_margin,
            })
            .collect();
        if orders.iter().all(|o| o.limit == 0) {
            return Ok(Pass {
                claimed: 0,
                saturated: !push.is_empty(),
                cap,
            });
        }
        let started = Instant::now();
        let claims = self.store.claim_many(&orders, &self.owner, now).await?;
        let took = started.elapsed();
        let mut claimed_total = 0;
        let mut saturated = false;
        for (((p, _), slots), claimed) in push.into_iter().zip(slots).zip(claims) {
            claimed_total += claimed.len();
            saturated |= !slots.is_empty() && claimed.len() == slots.len();
            let kinds: Vec<ClaimKind> = claimed.iter().map(|c| c.kind).collect();
            self.metrics
                .claim_finished(p.spec.id.as_str(), took, &kinds);
            let probe = probes.get(&p.spec.id).copied();
            let ticket = self.ticket(p, slots.len() - claimed.len());
            let p = Arc::new(p.clone());
            // Unused slots are released when their permits drop here.
            for (c, permits) in claimed.into_iter().zip(slots) {
                let this = self.clone();
                let p = p.clone();
                set.spawn(async move {
                    let _permits = permits;
                    this.deliver(&p, c, probe, ticket).await;
                });
            }
        }
        if any_notice {
            claimed_total += self.send_cancel_notices(&processors, set).await?;
        }
        Ok(Pass {
            claimed: claimed_total,
            saturated,
            cap,
        })
    }
}
