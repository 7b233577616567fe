//! The recorder: writes delivery results in batches.
//!
//! Delivery tasks hand their result to the recorder and wait for it to be
//! durable before releasing their processor's delivery slot (their global
//! slot they have handed over to a write-back slot already, see
//! `dispatch::slots`). The recorder takes whatever
//! results are waiting — one when the system is quiet, hundreds under load —
//! and writes them in one transaction, so the cost of a commit is shared by
//! the whole batch. A result still queued when the process dies is simply
//! lost with it: the lease expires and the instruction is redelivered with
//! the same id, exactly as if the delivery itself had been cut short.
//! A batch the database refuses for good (not a deadlock or a lost
//! connection, which are retried) is written again one result at a time,
//! so that one result it cannot take does not send the others of its
//! batch back to their processors.
//!
//! On PostgreSQL on a machine with cores to spare, more than one batch is
//! written at once ([`Store::batch_writers`]), each on its own
//! connection: while one commits (the server flushes its WAL) the next
//! takes the results that arrived meanwhile, so recording keeps pace with
//! deliveries instead of taking turns with its own commits. Batches lock
//! their instructions and then their requests, each in id order, so two
//! of them touching the same request wait for each other rather than
//! deadlock, as two replicas' recorders do.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::batches::{Batches, SharedBatches};

use crate::clock::Clock;
use crate::store::{DeliveryReport, Store};

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
    /// A recorder, and the task that writes what it is handed (see
    /// [`RecorderTask::run`]).
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> (Self, RecorderTask) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        (Self { tx }, RecorderTask { store, clock, rx })
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

/// The recorder's writing side.
pub struct RecorderTask {
    store: Store,
    clock: Arc<dyn Clock>,
    rx: mpsc::Receiver<Pending>,
}

impl RecorderTask {
    /// Writes results in batches until `stop`, then what is queued, and
    /// ends: stop it after the deliveries that report to it. Until it
    /// runs, deliveries wait for their results to be written.
    pub async fn run(self, stop: CancellationToken) {
        let RecorderTask { store, clock, rx } = self;
        let writers = store.batch_writers();
        SharedBatches::new(Batches::new(rx, MAX_BATCH, stop))
            .run(writers, move |batches| {
                let (store, clock) = (store.clone(), clock.clone());
                async move {
                    while let Some(batch) = batches.next().await {
                        let applied = write(&store, clock.as_ref(), &batch).await;
                        for p in batch {
                            let ok = applied
                                .as_ref()
                                .is_some_and(|ids| ids.contains(&p.report.id));
                            let _ = p.done.send(ok);
                        }
                    }
                }
            })
            .await;
    }
}

/// Writes one batch, and its results one by one if the database refuses
/// the batch for good; the ids of the results applied (`None`: none was
/// written).
async fn write(
    store: &Store,
    clock: &dyn Clock,
    batch: &[Pending],
) -> Option<Vec<crate::domain::InstructionId>> {
    match write_all(store, clock, batch).await {
        Ok(applied) => Some(applied),
        Err(e) if batch.len() > 1 && !e.is_transient() => {
            tracing::warn!(
                error = %e,
                results = batch.len(),
                "a batch of delivery results was refused; writing them one by one"
            );
            let mut applied = Vec::new();
            for one in batch.chunks(1) {
                match write_all(store, clock, one).await {
                    Ok(ids) => applied.extend(ids),
                    Err(e) => given_up(&e, 1),
                }
            }
            Some(applied)
        }
        Err(e) => {
            given_up(&e, batch.len());
            None
        }
    }
}

/// Logs results that could not be written.
fn given_up(e: &crate::store::StoreError, results: usize) {
    tracing::error!(
        error = %e,
        results,
        "could not record delivery results; they will be redelivered when their leases expire"
    );
}

/// Writes `batch` in one transaction, retrying transient failures; the
/// ids of the results applied, or the error it gave up on.
async fn write_all(
    store: &Store,
    clock: &dyn Clock,
    batch: &[Pending],
) -> Result<Vec<crate::domain::InstructionId>, crate::store::StoreError> {
    let mut attempt = 1;
    loop {
        let reports = batch.iter().map(|p| p.report.clone()).collect();
        match store.record_deliveries(reports, clock.now()).await {
            Ok(changed) => return Ok(changed.into_iter().map(|v| v.id).collect()),
            Err(e) if attempt < MAX_TRIES && e.is_transient() => {
                tracing::info!(error = %e, attempt, "recording a batch failed; retrying");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
