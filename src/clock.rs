//! Time, injected. Every decision that depends on "now" — backoff, leases,
//! completion timeouts — reads it from a [`Clock`], so tests drive those
//! decisions with a [`ManualClock`] instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{Timestamp, truncate_to_micros};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, at microsecond precision.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate_to_micros(chrono::Utc::now())
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// Starts at the current wall-clock time.
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(SystemClock.now())))
    }
    /// Starts at `t`.
    pub fn at(t: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(truncate_to_micros(t))))
    }
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += chrono::Duration::from_std(by).expect("duration in range");
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}
