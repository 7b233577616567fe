//! Cancel notices to push processors (see `store::cancel_notices`): each
//! a call like a delivery, in a slot of the replica's and one of its
//! processor's, sent at the start of a pass before its claim so that a
//! backlog of deliveries cannot keep them waiting. A processor whose
//! breaker is open gets none: the outage would only spend their retries.
//! One whose breaker this replica may probe gets one notice as the probe,
//! so a breaker opened by deliveries that then all ended (cancelled,
//! escalated) still closes once the processor answers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::Instrument;

use super::adapter::{DeliveryError, Endpoint};
use super::slots::{Cap, Slot};
use super::{Dispatcher, breaker};
use crate::domain::{Processor, ProcessorId};
use crate::store::{CancelNotice, StoreError};

/// Most cancel notices a dispatcher pass starts.
const CANCEL_NOTICES_PER_PASS: usize = 64;

impl Dispatcher {
    /// Sends due cancel notices to `processors` (push processors whose
    /// breakers let calls through, each with the cool-down of the breaker
    /// it may probe), each notice on its own task holding a delivery slot,
    /// global and of its processor: up to [`CANCEL_NOTICES_PER_PASS`] a
    /// pass, within the slots free under the pass's `cap`, and one for a
    /// processor to probe. Returns how many it started, and the processors
    /// a notice probes.
    pub(super) async fn send_cancel_notices(
        &self,
        processors: &[(&Processor, Option<Duration>)],
        cap: Cap,
        set: &super::InFlight,
    ) -> Result<(usize, HashSet<ProcessorId>), StoreError> {
        let mut probing = HashSet::new();
        let mut free = self.free_under(cap).min(CANCEL_NOTICES_PER_PASS);
        if free == 0 {
            return Ok((0, probing));
        }
        let now = self.clock.now();
        // Who reserves first rotates from pass to pass, so a processor with
        // many notices due cannot take every pass's slots for good.
        let mut due = self.store.due_cancel_notices(now).await?;
        if !due.is_empty() {
            let first = self.passes.load(Ordering::Relaxed) % due.len();
            due.rotate_left(first);
        }
        // Each processor with notices due, the cool-down it probes, and the
        // slots reserved for it (one for a probe).
        let mut slots: HashMap<ProcessorId, (&Processor, Option<Duration>, Vec<Slot>)> =
            HashMap::new();
        for (id, due) in due {
            let Some(&(p, probe)) = processors.iter().find(|(p, _)| p.spec.id == id) else {
                continue;
            };
            let most = if probe.is_some() { 1 } else { due as usize };
            let reserved = self.reserve(p, most.min(free));
            free -= reserved.len();
            slots.insert(id, (p, probe, reserved));
            if free == 0 {
                break;
            }
        }
        let asks: Vec<(&ProcessorId, u32)> = slots
            .iter()
            .map(|(id, (_, _, s))| (id, s.len() as u32))
            .collect();
        // Leased past the slowest push processor's deadline.
        let lease = processors
            .iter()
            .filter_map(|(p, _)| p.spec.adapter.push_timeout())
            .max()
            .unwrap_or_default()
            + self.config.lease_margin;
        let notices = self.store.lease_cancel_notices(&asks, lease, now).await?;
        let mut started = 0;
        for n in notices {
            // At most as many notices as slots were leased per processor.
            let Some((p, probe, slot)) = slots
                .get_mut(&n.processor_id)
                .and_then(|(p, probe, s)| Some((*p, *probe, s.pop()?)))
            else {
                continue;
            };
            if probe.is_some() {
                probing.insert(p.spec.id.clone());
            }
            let p = p.clone();
            let this = self.clone();
            started += 1;
            set.spawn(async move {
                this.send_cancel_notice(&p, n, slot, probe).await;
            });
        }
        Ok((started, probing))
    }

    /// One cancel notice: done once the processor answered; a retryable
    /// failure is tried again under the processor's retry policy, and
    /// given up (logged and counted) after it or on a fatal one. Its
    /// `slot` is handed over at the answer, as a delivery's is; as a
    /// `probe`, its answer closes the breaker, its failure opens it again.
    async fn send_cancel_notice(
        &self,
        p: &Processor,
        n: CancelNotice,
        slot: Slot,
        probe: Option<Duration>,
    ) {
        let span = tracing::info_span!(
            "cancel_notice",
            otel.kind = "client",
            instruction_id = %n.instruction_id,
            processor_id = %p.spec.id,
            attempt = n.attempts,
        );
        async {
            let mut asked = false;
            let sent = match self.secret_for(p).await {
                Ok(secret) => match Endpoint::of(&p.spec.adapter, &secret) {
                    Some(endpoint) => {
                        asked = true;
                        let _awaiting = self.awaiting_answer();
                        self.adapter.cancel(endpoint, n.instruction_id, &n.reason).await
                    }
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            let reached = breaker::reached(asked, &sent);
            let failed = reached && breaker::failed(&sent);
            // A probe's breaker learns first, as a delivery's does.
            let reopened = match probe.is_some() && reached {
                true => self.after_call(p, failed, probe).await,
                false => false,
            };
            // Then both slots come free: the processor's, as the claim does
            // not count notices against its limit across replicas; the
            // replica's, handed over while the row is written.
            let (global, own) = slot;
            drop(own);
            let _writing = self.hand_over(global).await;
            let policy = &p.spec.retry_policy;
            // Fenced by the attempt leased: one leased again since is the
            // new holder's to finish.
            let (id, attempt) = (n.instruction_id, n.attempts);
            let (result, written, given_up) = match sent {
                Ok(()) => ("sent", self.store.cancel_notice_done(id, Some(attempt)).await, None),
                Err(DeliveryError::Retryable { after, code, .. })
                    if reopened || n.attempts < policy.max_attempts =>
                {
                    let delay = policy
                        .delay_after(n.attempts, n.instruction_id)
                        .max(after.unwrap_or_default());
                    tracing::info!(code = %code, delay_ms = delay.as_millis() as u64, "cancel notice failed; will retry");
                    let at = self.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    // A probe that failed and opened the breaker again
                    // gives its attempt back: the outage failed, not the
                    // notice, and the breaker holds the notice.
                    ("retried", self.store.cancel_notice_retry(id, attempt, at, reopened).await, None)
                }
                Err(e) => {
                    let written = self.store.cancel_notice_done(id, Some(attempt)).await;
                    ("given_up", written, Some(e.code().to_string()))
                }
            };
            // Counted once written: one leased again since is counted by
            // its new holder.
            match written {
                Ok(true) => {
                    if let Some(code) = given_up {
                        tracing::warn!(code = %code, attempts = n.attempts, "cancel notice given up");
                    }
                    self.metrics.cancel_notice(p.spec.id.as_str(), result)
                }
                Ok(false) => tracing::info!(
                    "cancel notice leased again before its answer was written; its new holder finishes it"
                ),
                Err(e) => tracing::warn!(error = %e, "cancel notice not updated; it is sent again when its lease ends"),
            }
        }
        .instrument(span)
        .await
    }
}
