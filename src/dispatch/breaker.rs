//! Circuit breakers: a push processor that fails
//! `--breaker-failures` deliveries in a row (no answer, a retryable error)
//! is left alone for `--breaker-cooldown`, then probed with one delivery
//! (or one cancel notice, see `super::notices`); the probe's success
//! closes the breaker, its failure opens it again for
//! twice as long (at most [`MAX_COOLDOWN_FACTOR`] times the first).
//!
//! Failures are counted per replica, in memory: a replica writes only when
//! a breaker opens or closes, never per delivery. The breaker itself is a
//! row (see `store::breakers`) that every replica reads at each pass, so
//! the whole deployment stops delivering to the processor together, and
//! one replica (the one that takes the probe's lease) probes it. A replica
//! takes the lease only when the processor has work due, and a pass that
//! then claims nothing for it gives the lease back, so that work due just
//! after need not wait for the lease to run out.
//!
//! While a breaker is open its instructions wait without spending their
//! retry budget; their due times still escalate them. A probe that
//! reached the processor, failed and opened the breaker again gives its
//! attempt back (see `deliver::result_of`). An operator may close a
//! breaker by hand (`CloseCircuitBreaker`).

use std::collections::HashMap;
use std::time::Duration;

use super::Dispatcher;
use super::adapter::DeliveryError;
use crate::domain::{Processor, ProcessorId, Timestamp};
use crate::store::{Breaker, StoreError};

/// The longest cool-down, in multiples of the first.
pub const MAX_COOLDOWN_FACTOR: u32 = 16;

/// What a processor's breaker allows in a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Deliver as usual.
    Closed,
    /// Deliver nothing.
    Open,
    /// Send one cancel notice or deliver one instruction: this replica
    /// probes a breaker opened for this cool-down.
    Probe(Duration),
}

/// Whether a call (a delivery or a cancel notice) that this replica
/// `asked` the processor reached it: a failure before the call left (its
/// request or secret unreadable, a setting that does not build), or an
/// adapter's failure before it sent anything, is this replica's, and
/// neither the breaker nor the delivery limit learns from it.
pub(super) fn reached<T>(asked: bool, answer: &Result<T, DeliveryError>) -> bool {
    asked && !matches!(answer, Err(e) if e.is_local())
}

/// Whether a call's answer counts against the processor's health: it did
/// not answer, or answered that it cannot take work now (a retryable
/// error). An answer, even a refusal, shows it is up.
pub(super) fn failed<T>(answer: &Result<T, DeliveryError>) -> bool {
    matches!(answer, Err(DeliveryError::Retryable { .. }))
}

impl Dispatcher {
    /// What `p`'s breaker allows in this pass; for a half-open one with
    /// work due to probe it, takes the probe's lease (for `lease`) if no
    /// replica holds it.
    pub(super) async fn gate(
        &self,
        p: &Processor,
        breakers: &HashMap<ProcessorId, Breaker>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Gate, StoreError> {
        Ok(match breakers.get(&p.spec.id) {
            None => Gate::Closed,
            Some(b) if !b.half_open(now) => Gate::Open,
            Some(b) => {
                if self.store.probe_due(&p.spec.id, now).await?
                    && self.store.take_probe(&p.spec.id, lease, now).await?
                {
                    Gate::Probe(b.cooldown)
                } else {
                    Gate::Open
                }
            }
        })
    }

    /// Gives back the probe of `p`'s breaker that [`Dispatcher::gate`]
    /// took in this pass (at `now`, for `timeout` and the lease margin)
    /// when the pass had nothing to probe with, so that work due just
    /// after need not wait for the lease to run out.
    pub(super) async fn unused_probe(&self, p: &Processor, timeout: Duration, now: Timestamp) {
        let lease = timeout + self.config.lease_margin;
        if let Err(e) = self.store.release_probe(&p.spec.id, lease, now).await {
            tracing::warn!(
                processor_id = %p.spec.id,
                error = %e,
                "probe not given back; it is free again when its lease runs out"
            );
        }
    }

    /// Counts a call that reached `p` against its breaker (`failed`: see
    /// [`failed`] for a delivery), opening or closing it when that is due;
    /// `probe` is the cool-down of the breaker this call probed, if it was
    /// a probe. Returns whether a failed probe opened the breaker again:
    /// only then does the call give its attempt back, as the breaker holds
    /// its work from then on.
    pub(super) async fn after_call(
        &self,
        p: &Processor,
        failed: bool,
        probe: Option<Duration>,
    ) -> bool {
        let threshold = self.config.breaker_failures;
        if threshold == 0 {
            return false;
        }
        let id = &p.spec.id;
        let now = self.clock.now();
        let written = if failed {
            if let Some(previous) = probe {
                // The open breaker holds the count; this failure adds one.
                self.failures.lock().expect("failures lock").remove(id);
                let cooldown =
                    (previous * 2).min(self.config.breaker_cooldown * MAX_COOLDOWN_FACTOR);
                tracing::warn!(
                    processor_id = %id,
                    cooldown_ms = cooldown.as_millis() as u64,
                    "probe failed; circuit breaker open again"
                );
                self.metrics.breaker_changed(id.as_str(), "open");
                let reopened = self.store.open_breaker(id, 1, cooldown, now).await;
                if let Err(e) = &reopened {
                    tracing::warn!(processor_id = %id, error = %e, "circuit breaker not updated");
                }
                return reopened.is_ok();
            }
            let failures = {
                let mut counts = self.failures.lock().expect("failures lock");
                let n = counts.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            if failures >= threshold {
                self.failures.lock().expect("failures lock").remove(id);
                tracing::warn!(
                    processor_id = %id,
                    failures,
                    cooldown_ms = self.config.breaker_cooldown.as_millis() as u64,
                    "circuit breaker open: deliveries to this processor stop for the cool-down"
                );
                self.metrics.breaker_changed(id.as_str(), "open");
                self.store
                    .open_breaker(id, failures, self.config.breaker_cooldown, now)
                    .await
            } else {
                Ok(())
            }
        } else {
            self.failures.lock().expect("failures lock").remove(id);
            if probe.is_some() {
                tracing::info!(processor_id = %id, "probe answered; circuit breaker closed");
                self.metrics.breaker_changed(id.as_str(), "closed");
                self.store.close_breaker(id).await.map(drop)
            } else {
                Ok(())
            }
        };
        if let Err(e) = written {
            tracing::warn!(processor_id = %id, error = %e, "circuit breaker not updated");
        }
        false
    }
}
