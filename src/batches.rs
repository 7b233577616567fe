//! The receiving end of a batching queue: intake's writer, the recorder
//! and the notice publisher each take everything waiting at once (one item
//! when traffic is light, hundreds under load) and pay for one commit or
//! one round trip per batch. Each stops the same way: told to stop, its
//! queue closes (senders fail at once), and what was already queued is
//! still handed out, so nothing accepted is dropped.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches from a queue, until it is stopped and drained.
pub struct Batches<T> {
    rx: mpsc::Receiver<T>,
    max: usize,
    stop: CancellationToken,
}

impl<T> Batches<T> {
    /// Batches of at most `max` from `rx`, until `stop`.
    pub fn new(rx: mpsc::Receiver<T>, max: usize, stop: CancellationToken) -> Self {
        Self { rx, max, stop }
    }

    /// Everything waiting (at most `max`), after waiting for one item if
    /// none is; `None` once stopped and drained.
    pub async fn next(&mut self) -> Option<Vec<T>> {
        let mut batch = Vec::with_capacity(self.max);
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if !self.rx.is_closed() => self.rx.close(),
                n = self.rx.recv_many(&mut batch, self.max) => return (n > 0).then_some(batch),
            }
        }
    }
}

/// [`Batches`] shared by several writers, so that more than one batch can
/// be written at once: each writer takes the next batch when it is free,
/// and while one commits the next takes what queued meanwhile. Only one
/// writer waits on the queue at a time; the others wait for their turn.
pub struct SharedBatches<T>(std::sync::Arc<tokio::sync::Mutex<Batches<T>>>);

impl<T> Clone for SharedBatches<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> SharedBatches<T> {
    /// Shares `batches`.
    pub fn new(batches: Batches<T>) -> Self {
        Self(std::sync::Arc::new(tokio::sync::Mutex::new(batches)))
    }

    /// The next batch (see [`Batches::next`]).
    pub async fn next(&self) -> Option<Vec<T>> {
        self.0.lock().await.next().await
    }
}

impl<T: Send + 'static> SharedBatches<T> {
    /// Runs `writers` tasks made by `writer`, each given these batches,
    /// until all have ended (stopped and drained); a writer's panic is
    /// passed on once they have.
    pub async fn run<F, Fut>(self, writers: usize, writer: F)
    where
        F: Fn(Self) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..writers.max(1) {
            running.spawn(writer(self.clone()));
        }
        let mut panicked = None;
        while let Some(ended) = running.join_next().await {
            if let Err(e) = ended
                && e.is_panic()
            {
                panicked.get_or_insert(e.into_panic());
            }
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_was_queued_before_the_stop_is_still_handed_out() {
        let (tx, rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let mut batches = Batches::new(rx, 2, stop.clone());
        for i in 0..3 {
            tx.send(i).await.unwrap();
        }
        assert_eq!(batches.next().await, Some(vec![0, 1]));
        stop.cancel();
        assert_eq!(batches.next().await, Some(vec![2]));
        assert!(tx.send(3).await.is_err(), "closed to new items");
        assert_eq!(batches.next().await, None);
    }

    #[tokio::test]
    async fn shared_batches_hand_each_item_to_one_writer() {
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let shared = SharedBatches::new(Batches::new(rx, 4, stop.clone()));
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let taken = got.clone();
        let writers = tokio::spawn(shared.run(3, move |batches| {
            let got = taken.clone();
            async move {
                while let Some(batch) = batches.next().await {
                    got.lock().unwrap().extend(batch);
                }
            }
        }));
        for i in 0..50 {
            tx.send(i).await.unwrap();
        }
        stop.cancel();
        writers.await.unwrap();
        let mut all = got.lock().unwrap().clone();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
    }
}
