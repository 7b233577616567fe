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
