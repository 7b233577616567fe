//! The background tasks of a running orchestrator, started and stopped
//! in order by [`super::Application`].

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Background tasks, each with its own stop signal.
#[derive(Default)]
pub(super) struct Background {
    running: Vec<(&'static str, CancellationToken, JoinHandle<()>)>,
}

impl Background {
    /// Spawns the task `make` returns for a fresh stop signal, if any.
    pub(super) fn start<F>(
        &mut self,
        name: &'static str,
        make: impl FnOnce(CancellationToken) -> Option<F>,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        if let Some(task) = make(stop.clone()) {
            self.running.push((name, stop, tokio::spawn(task)));
        }
    }

    /// Stops the tasks one at a time, the last started first, each
    /// finishing its work in hand before the next is told.
    pub(super) async fn stop(self) {
        for (name, stop, task) in self.running.into_iter().rev() {
            stop.cancel();
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
    }
}
