//! A count of things in progress, each counted while its guard lives: the
//! submissions intake is taking in, the calls the dispatcher is waiting
//! on processors to answer, and the calls the server is answering
//! (`api::in_flight`). Dropping a guard uncounts it on every
//! path, an error or a cancelled task included. [`HeldBody`] keeps a guard
//! until a response body has been sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// How many guards of [`InProgress::start`] are alive.
#[derive(Clone, Debug, Default)]
pub struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    /// Counts one more until the returned guard drops.
    pub fn start(&self) -> Counted {
        self.0.fetch_add(1, Ordering::Relaxed);
        Counted(self.0.clone())
    }

    /// Counts one more, until the returned guard drops, if fewer than
    /// `limit` are in progress; `None` otherwise. The check and the count
    /// are one atomic step, so calls meeting at the limit never both pass
    /// nor both fail.
    pub fn start_within(&self, limit: usize) -> Option<Counted> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(self.0.clone()))
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

/// A response body that keeps `guard` until the body has been sent or is
/// dropped, for what counts while a response is still being written.
pub struct HeldBody<B, G> {
    /// The body.
    pub body: B,
    /// Dropped with the body.
    pub guard: G,
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for HeldBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_within_counts_up_to_its_limit_and_no_further() {
        let count = InProgress::default();
        let first = count.start_within(2).expect("room for the first");
        let second = count.start_within(2).expect("room for the second");
        assert!(count.start_within(2).is_none(), "the third is refused");
        assert_eq!(count.get(), 2, "a refusal counts nothing");
        drop(first);
        let third = count.start_within(2).expect("room once one ends");
        assert_eq!(count.get(), 2);
        drop((second, third));
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn start_within_admits_exactly_the_limit_from_many_threads() {
        let count = InProgress::default();
        let start = std::sync::Barrier::new(8);
        let admitted = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (count, start) = (count.clone(), &start);
                    scope.spawn(move || {
                        start.wait();
                        (0..20)
                            .filter_map(|_| count.start_within(100))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // Every thread's guards stay alive until all have joined.
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect::<Vec<_>>()
        });
        assert_eq!(admitted.iter().map(Vec::len).sum::<usize>(), 100);
        assert_eq!(count.get(), 100);
        drop(admitted);
        assert_eq!(count.get(), 0, "all dropped");
    }
}
