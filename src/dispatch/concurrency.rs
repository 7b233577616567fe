//! The adaptive delivery limit of a push processor registered without a
//! `max_in_flight`: how many deliveries this replica sends it at once,
//! learnt from how it answers.
//!
//! A fixed default cannot suit both kinds of processor a deployment has. A
//! processor that answers in 200 ms needs about 200 deliveries in flight to
//! take a thousand a second (Little's law), and one that answers at once
//! needs a handful; sending a small processor 200 at once would flood it.
//! So the limit starts at [`START`] and moves with what the processor
//! shows, in the manner of TCP's congestion window:
//!
//! - **Grows** with each answer that came in good time from a delivery
//!   sent while the limit was at least half used: by one per answer below
//!   the threshold (the limit doubles per round trip: slow start), by one
//!   per round trip above it. It never passes [`CEILING`], which is also
//!   what the processor is sent across every replica (see
//!   `store::limits`): a slow processor holds at most a quarter of the
//!   default 2,048 slots of a replica, never every one.
//! - **Halves** on a failure that says the processor cannot cope (no
//!   answer in time, or a retryable error: the failures that count for
//!   its circuit breaker), down to one.
//! - **Shrinks by a tenth** (at least one) on an answer that took more than half the
//!   processor's delivery timeout: it is queueing, close to answering
//!   too late.
//!
//! Latency below that is no signal. On a busy replica the latency of a
//! processor answering at once is mostly the replica's own scheduling,
//! not the processor's queue, and a rule that judged answers against the
//! lowest recent latency cut such processors' limits while more deliveries
//! in flight were still carrying more (see
//! `docs/decisions/0009-adaptive-delivery-limit.md`).
//!
//! A decrease counts once per round trip: answers to deliveries sent
//! before the last decrease carry no news about the limit it set, so they
//! cannot cut it again (each delivery carries the decrease count at its
//! start, a [`Ticket`]). Each replica learns on its own, from its own
//! deliveries, and starts again at [`START`] when it restarts.

use std::time::Duration;

/// Where the limit starts.
pub const START: u32 = 16;

/// The most the limit grows to; also the processor's limit across every
/// replica of the deployment.
pub const CEILING: u32 = crate::domain::MAX_ADAPTIVE_IN_FLIGHT;

/// What a delivery carries from its start to its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The limit's decreases before the delivery started.
    cuts: u64,
    /// Whether the limit was at least half used when it started.
    busy: bool,
}

/// One processor's adaptive limit on one replica.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    limit: u32,
    /// Below it, growth is one per answer; above, one per round trip.
    threshold: u32,
    /// Answers in good time since the limit last grew above the threshold.
    credit: u32,
    cuts: u64,
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        Self {
            limit: START,
            threshold: CEILING,
            credit: 0,
            cuts: 0,
        }
    }
}

impl AdaptiveLimit {
    /// Deliveries that may be in flight now.
    pub fn get(&self) -> u32 {
        self.limit
    }

    /// The ticket of a delivery starting with `in_flight` deliveries to
    /// the processor (itself included).
    pub fn ticket(&self, in_flight: usize) -> Ticket {
        Ticket {
            cuts: self.cuts,
            busy: in_flight.saturating_mul(2) >= self.limit as usize,
        }
    }

    /// Learns from the answer of the delivery that started with `ticket`:
    /// it `took` this long of the `timeout` it had, and `failed` if the
    /// processor could not cope.
    pub fn observe(&mut self, ticket: Ticket, took: Duration, timeout: Duration, failed: bool) {
        let current = ticket.cuts == self.cuts;
        if failed {
            if current {
                self.cut(self.limit / 2);
            }
        } else if took > timeout / 2 {
            if current {
                self.cut(self.limit - (self.limit / 10).max(1));
            }
        } else if ticket.busy && self.limit < CEILING {
            if self.limit < self.threshold {
                self.limit += 1;
            } else {
                self.credit += 1;
                if self.credit >= self.limit {
                    self.limit += 1;
                    self.credit = 0;
                }
            }
        }
    }

    /// Lowers the limit to `to`, not below one.
    fn cut(&mut self, to: u32) {
        self.limit = to.max(1);
        self.threshold = self.limit;
        self.credit = 0;
        self.cuts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// One round trip at the current limit, every delivery answering
    /// after `took`, failing if `failed`.
    fn round(l: &mut AdaptiveLimit, took: Duration, failed: bool) {
        let n = l.get() as usize;
        let tickets: Vec<_> = (0..n).map(|_| l.ticket(n)).collect();
        for t in tickets {
            l.observe(t, took, TIMEOUT, failed);
        }
    }

    #[test]
    fn doubles_per_round_trip_up_to_the_ceiling() {
        let mut l = AdaptiveLimit::default();
        let mut seen = vec![l.get()];
        for _ in 0..6 {
            round(&mut l, FAST, false);
            seen.push(l.get());
        }
        assert_eq!(seen, [16, 32, 64, 128, 256, 512, 512]);
    }

    #[test]
    fn a_failed_round_halves_it_once_and_growth_is_then_linear() {
        let mut l = AdaptiveLimit::default();
        round(&mut l, FAST, false);
        round(&mut l, FAST, false);
        assert_eq!(l.get(), 64);
        round(&mut l, FAST, true);
        assert_eq!(l.get(), 32, "64 failures in one round trip cut once");
        round(&mut l, FAST, true);
        assert_eq!(l.get(), 16);
        round(&mut l, FAST, false);
        assert_eq!(l.get(), 17, "one per round trip after a cut");
        for _ in 0..30 {
            round(&mut l, FAST, true);
        }
        assert_eq!(l.get(), 1, "never below one");
    }

    #[test]
    fn answers_near_the_timeout_shrink_it_by_a_tenth() {
        let mut l = AdaptiveLimit::default();
        for _ in 0..3 {
            round(&mut l, FAST, false);
        }
        assert_eq!(l.get(), 128);
        round(&mut l, Duration::from_millis(5_001), false);
        assert_eq!(l.get(), 116, "once per round trip");
        // Half the timeout is still in good time.
        round(&mut l, Duration::from_millis(5_000), false);
        assert_eq!(l.get(), 117);
        // Below ten, a tenth is still one.
        for _ in 0..30 {
            round(&mut l, FAST, true);
        }
        round(&mut l, FAST, false);
        assert_eq!(l.get(), 2);
        round(&mut l, Duration::from_millis(5_001), false);
        assert_eq!(l.get(), 1);
    }

    #[test]
    fn slow_but_steady_answers_grow_it_like_fast_ones() {
        let mut l = AdaptiveLimit::default();
        for _ in 0..5 {
            round(&mut l, Duration::from_millis(200), false);
        }
        assert_eq!(l.get(), 512);
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        let mut l = AdaptiveLimit::default();
        for _ in 0..100 {
            let t = l.ticket(1);
            l.observe(t, FAST, TIMEOUT, false);
        }
        assert_eq!(l.get(), START);
    }
}
