//! A count of things in progress, each counted while its guard lives: the
//! submissions intake is taking in, and the calls the dispatcher is
//! waiting on processors to answer. Dropping a guard uncounts it on every
//! path, an error or a cancelled task included.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many guards of [`InProgress::start`] are alive.
#[derive(Clone, Debug, Default)]
pub struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    /// Counts one more until the returned guard drops.
    pub fn start(&self) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self.0.clone())
    }

    /// How many are in progress now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One thing in progress, counted until dropped.
#[must_use = "it counts as in progress only while this lives"]
#[derive(Debug)]
pub struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
