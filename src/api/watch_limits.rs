//! The bound on open `WatchRequest` streams, per caller and in all
//! (`--max-watches-per-caller`, `--max-watches`): a watch stays open for
//! days, so it counts here for as long as it is open instead of among
//! the calls in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::Status;

use super::limits::{LimitSettings, exhausted, key};
use crate::auth::Caller;

/// Open `WatchRequest` streams, per caller and in all.
pub struct WatchLimits {
    settings: LimitSettings,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open watch, counted until dropped.
pub struct Watching {
    limits: Arc<WatchLimits>,
    key: String,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("watch limits lock");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

impl WatchLimits {
    /// Limits with `settings`.
    pub fn new(settings: LimitSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            open: Mutex::default(),
        })
    }

    /// Opens a watch for `caller`, or answers why not.
    pub fn open(self: &Arc<Self>, caller: &Caller) -> Result<Watching, Status> {
        let key = key(caller);
        let mut open = self.open.lock().expect("watch limits lock");
        if open.0 >= self.settings.watches {
            return Err(exhausted(
                "the server follows as many requests as it may; retry later",
                Some(Duration::from_secs(1)),
            ));
        }
        let mine = open.1.entry(key.clone()).or_default();
        if *mine >= self.settings.watches_per_caller {
            return Err(exhausted(
                &format!(
                    "the caller already follows {} requests, its limit; end one first",
                    self.settings.watches_per_caller
                ),
                None,
            ));
        }
        *mine += 1;
        open.0 += 1;
        Ok(Watching {
            limits: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::limits::tests::settings;

    #[test]
    fn watches_are_counted_per_caller_and_in_all() {
        let limits = WatchLimits::new(settings());
        let a = Caller::Anonymous;
        let first = limits.open(&a).unwrap();
        assert!(limits.open(&a).is_err(), "one per caller");
        let b = Caller::Processor(crate::domain::ProcessorId::parse("vendor").unwrap());
        let second = limits.open(&b).unwrap();
        let c = Caller::Processor(crate::domain::ProcessorId::parse("other").unwrap());
        assert!(limits.open(&c).is_err(), "two in all");
        drop(first);
        drop(second);
        assert!(limits.open(&c).is_ok());
    }
}
