//! The retry policy: when to try a failed delivery again, and when to give up
//! and escalate. The nominal delay after the n-th failure is
//! `min(max_backoff, initial_backoff * multiplier^(n-1))`; the actual delay
//! is drawn from the upper half of it ("equal jitter"), so that a processor
//! coming back from an outage is not hit by every instruction at the same
//! instant — also once the nominal delay has reached its cap — while no
//! retry comes sooner than half the nominal delay. The computation is pure:
//! the jitter is seeded from the instruction id and attempt, so a given
//! instruction's schedule is reproducible in tests while different
//! instructions spread out.
//!
//! The delay sequence comes from `backon` (the maintained successor of the
//! `backoff` crate); we only ask it for the n-th delay and write the result
//! to the row as `next_attempt_at` — nothing sleeps.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use super::processor::millis;
use super::{InstructionId, Violations};

/// How a processor's failed deliveries are retried.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    /// Upper bound of any delay.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Attempts (since the last re-arm) before escalation.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            multiplier: 2.0,
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// Checks bounds; `None` takes the default.
    pub fn new(
        initial_backoff: Option<Duration>,
        max_backoff: Option<Duration>,
        multiplier: Option<f64>,
        max_attempts: Option<u32>,
    ) -> Result<Self, Violations> {
        let d = Self::default();
        let p = Self {
            initial_backoff: initial_backoff.unwrap_or(d.initial_backoff),
            max_backoff: max_backoff.unwrap_or(d.max_backoff),
            multiplier: multiplier.unwrap_or(d.multiplier),
            max_attempts: max_attempts.unwrap_or(d.max_attempts),
        };
        let mut v = Violations::new();
        if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&p.initial_backoff) {
            v.add("initial_backoff", "must be between 1ms and 1h");
        }
        if p.max_backoff < p.initial_backoff || p.max_backoff > Duration::from_secs(86400) {
            v.add(
                "max_backoff",
                "must be at least initial_backoff and at most 24h",
            );
        }
        if !(1.0..=10.0).contains(&p.multiplier) {
            v.add("multiplier", "must be between 1.0 and 10.0");
        }
        if !(1..=100).contains(&p.max_attempts) {
            v.add("max_attempts", "must be between 1 and 100");
        }
        v.finish(|| p)
    }

    /// Whether another attempt is allowed after `attempts_since_arm` attempts.
    pub fn allows_another(&self, attempts_since_arm: u32) -> bool {
        attempts_since_arm < self.max_attempts
    }

    /// The delay after the `attempt`-th failed attempt (1-based): within
    /// `[nominal / 2, nominal]`, jittered by a seed derived from the
    /// instruction id and attempt.
    pub fn delay_after(&self, attempt: u32, instruction: InstructionId) -> Duration {
        let seed = instruction.as_uuid().as_u64_pair().1 ^ u64::from(attempt);
        // backon adds up to 100 % jitter on top of its delay, so asking it
        // for half the nominal delay yields the upper half of the nominal.
        ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff / 2)
            .with_max_delay(self.max_backoff / 2)
            .with_factor(self.multiplier as f32)
            .without_max_times()
            .with_jitter()
            .with_jitter_seed(seed)
            .build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The nominal (un-jittered) delay after the `attempt`-th failure.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(attempt.saturating_sub(1).min(1000) as i32);
        self.initial_backoff
            .mul_f64(factor.min(1e9))
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(
            Some(Duration::from_secs(1)),
            Some(Duration::from_secs(60)),
            Some(2.0),
            Some(5),
        )
        .unwrap()
    }

    #[test]
    fn delays_stay_in_the_upper_half_of_the_nominal_delay() {
        let p = policy();
        for _ in 0..50 {
            let id = InstructionId::new();
            for attempt in 1..=12u32 {
                let nominal = p.nominal_delay(attempt);
                let d = p.delay_after(attempt, id);
                // f32 arithmetic inside backon: allow a microsecond of slack.
                let slack = Duration::from_micros(1);
                assert!(
                    d + slack >= nominal / 2,
                    "{attempt}: {d:?} < half of {nominal:?}"
                );
                assert!(d <= nominal + slack, "{attempt}: {d:?} > {nominal:?}");
            }
        }
        assert_eq!(p.nominal_delay(1), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(3), Duration::from_secs(4));
        assert_eq!(p.nominal_delay(12), Duration::from_secs(60));
    }

    #[test]
    fn capped_delays_are_still_spread() {
        let p = policy();
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| p.delay_after(12, InstructionId::new()))
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn jitter_is_reproducible_per_instruction() {
        let p = policy();
        let id = InstructionId::new();
        assert_eq!(p.delay_after(3, id), p.delay_after(3, id));
    }

    #[test]
    fn budget() {
        let p = policy();
        assert!(p.allows_another(4));
        assert!(!p.allows_another(5));
    }

    #[test]
    fn bounds_are_checked() {
        assert!(RetryPolicy::new(Some(Duration::ZERO), None, None, None).is_err());
        assert!(RetryPolicy::new(None, None, Some(0.5), None).is_err());
        assert!(RetryPolicy::new(None, None, None, Some(0)).is_err());
        assert!(
            RetryPolicy::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(1)),
                None,
                None
            )
            .is_err()
        );
    }
}
