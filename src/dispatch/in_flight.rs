//! The dispatcher's tasks in flight: deliveries, cancel notices, and the
//! writing of a claim's history that starts its deliveries (see
//! `crate::store::Leased`). One set, shared, so that a task in it can
//! start others in it: the loop wakes as each of them ends, and shutdown
//! drains them all, whichever task started them.

use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

/// A shared set of the dispatcher's tasks. The lock is only ever held
/// inside one call, never across an `await`.
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<Mutex<JoinSet<()>>>);

impl InFlight {
    fn set(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.0.lock().expect("in-flight set lock")
    }

    /// Runs `task` in the set.
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.set().spawn(task);
    }

    /// Whether no task is in the set.
    pub(super) fn is_empty(&self) -> bool {
        self.set().is_empty()
    }

    /// How many tasks are in the set.
    pub(super) fn len(&self) -> usize {
        self.set().len()
    }

    /// Takes every task that has ended.
    pub(super) fn reap(&self) {
        let mut set = self.set();
        while set.try_join_next().is_some() {}
    }

    /// Waits for a task to end; `None` when the set is empty.
    pub(super) async fn join_next(&self) -> Option<()> {
        poll_fn(|cx| self.set().poll_join_next(cx))
            .await
            .map(|_| ())
    }

    /// Waits until the set is empty, tasks started meanwhile included.
    pub(super) async fn drain(&self) {
        while self.join_next().await.is_some() {}
    }

    /// Aborts every task in the set.
    pub(super) fn abort_all(&self) {
        self.set().abort_all();
    }
}
