//! The recorder: writes delivery results in batches.
//!
//! Delivery tasks hand their result to the recorder and wait for it to be
//! durable before releasing their delivery slot. The recorder takes whatever
//! results are waiting — one when the system is quiet, hundreds under load —
//! and writes them in one transaction, so the cost of a commit is shared by
//! the whole batch. A result still queued when the process dies is simply
//! lost with it: the lease expires and the instruction is redelivered with
//! the same id, exactly as if the delivery itself had been cut short.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::store::{DeliveryReport, Store, StoreError};

/// Most results written in one transaction.
const MAX_BATCH: usize = 256;
/// Attempts at writing one batch before giving its results up to lease
/// expiry (a PostgreSQL deadlock or serialisation failure is retried).
const MAX_TRIES: usize = 3;

/// A result waiting to be written, and who waits for it.
struct Pending {
    report: DeliveryReport,
    /// Told whether the result was applied (false: lease lost, or the write
    /// failed and the instruction will be redelivered).
    done: oneshot::Sender<bool>,
}

/// Handle for delivery tasks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the recorder task; it ends when every handle is dropped.
    pub fn start(store: Store, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, clock, rx));
        Self { tx }
    }

    /// Queues a result and waits until it is written. Returns whether it
    /// was applied.
    pub async fn record(&self, report: DeliveryReport) -> bool {
        let (done, applied) = oneshot::channel();
        if self.tx.send(Pending { report, done }).await.is_err() {
            return false;
        }
        applied.await.unwrap_or(false)
    }
}

async fn run(store: Store, clock: Arc<dyn Clock>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let applied = write(&store, clock.as_ref(), &batch).await;
        for p in batch.drain(..) {
            let ok = applied
                .as_ref()
                .is_some_and(|ids| ids.contains(&p.report.id));
            let _ = p.done.send(ok);
        }
    }
}

/// Writes one batch, retrying transient failures; `None` if it could not.
async fn write(
    store: &Store,
    clock: &dyn Clock,
    batch: &[Pending],
) -> Option<Vec<crate::domain::InstructionId>> {
    for attempt in 1..=MAX_TRIES {
        let reports = batch.iter().map(|p| p.report.clone()).collect();
        match store.record_deliveries(reports, clock.now()).await {
            Ok(changed) => return Some(changed.into_iter().map(|v| v.id).collect()),
            Err(e) if attempt < MAX_TRIES && is_transient(&e) => {
                tracing::info!(error = %e, attempt, "recording a batch failed; retrying");
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    results = batch.len(),
                    "could not record delivery results; they will be redelivered when their leases expire"
                );
                return None;
            }
        }
    }
    None
}

/// Deadlocks and serialisation failures (PostgreSQL), busy databases
/// (SQLite) and dropped connections are worth another try.
fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001" | "5" | "6"))
        }
        StoreError::Database(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => true,
        _ => false,
    }
}
