//! The bound on calls in flight, all callers together
//! (`--max-calls-in-flight`): beyond it a call is answered
//! `RESOURCE_EXHAUSTED` at once rather than queued behind the others. It
//! sits outside authentication, so that calls whose credentials are
//! refused are bounded too: checking a processor's callback token asks the
//! database, and a flood of made-up tokens must not ask it without limit.
//!
//! A call counts until its response is ready, and a streamed access
//! report or export (the server reads the database while it streams)
//! until its last part has been sent or the stream is dropped. Only these
//! streams are held that long: their callers have proven who they are,
//! while a refusal's body to anyone could otherwise be held by a client
//! that never opens its flow-control window. A reader who stops reading a
//! report would keep its place as long as it liked, so a part the server
//! has ready that the reader does not take within [`STALLED_READER`] (the
//! transport holds it back until the reader's flow-control window opens)
//! closes the reader's connection, and with it the stream and its place;
//! a server still producing the next part is not a stalled reader. The
//! reader's other calls on that connection end too: they were made on a
//! connection that has stopped taking what it asked for.
//! `WatchRequest` streams, which stay open for days, count only until they
//! open: their own limit ([`super::watch_limits::WatchLimits`]) bounds them.
//! Health checks are exempt, so probes keep answering under load.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::{CancellationToken, DropGuard};
use tower::{Layer, Service};

use super::limits::{exhausted, is_health_check, refusal};
use crate::in_progress::{HeldBody, InProgress};
use crate::startup::Closer;

/// How long a streamed report's part may wait for its reader by default.
pub const STALLED_READER: Duration = Duration::from_secs(60);

/// The methods whose calls count until their streams end.
const STREAMED: &[&str] = &[
    "/dsr.v1.RequestService/GetAccessReport",
    "/dsr.v1.RequestService/ExportAccessData",
];

/// Wraps services in [`InFlightLimit`].
#[derive(Clone)]
pub struct InFlightLayer {
    limit: usize,
    stalled: Duration,
    count: InProgress,
}

impl InFlightLayer {
    /// At most `limit` calls in flight; a streamed report's reader who
    /// takes nothing for `stalled` is disconnected.
    pub fn new(limit: usize, stalled: Duration) -> Self {
        Self {
            limit,
            stalled,
            count: InProgress::default(),
        }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlightLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit {
            inner,
            limit: self.limit,
            stalled: self.stalled,
            count: self.count.clone(),
        }
    }
}

/// A service that takes a call only while fewer than its limit are in
/// flight.
#[derive(Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    limit: usize,
    stalled: Duration,
    count: InProgress,
}

impl<S, B> Service<http::Request<B>> for InFlightLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if is_health_check(path) {
            return Box::pin(inner.call(req));
        }
        let Some(counted) = self.count.start_within(self.limit) else {
            let status = exhausted(
                "the server has too many calls in progress; retry shortly",
                Some(Duration::from_millis(100)),
            );
            return Box::pin(async move { Ok(refusal(&req, status)) });
        };
        let whole_body = STREAMED.contains(&path);
        let closer = Closer::of(req.extensions());
        let stalled = self.stalled;
        Box::pin(async move {
            let response = inner.call(req).await?;
            if !whole_body {
                return Ok(response);
            }
            Ok(response.map(|body| {
                let body = HeldBody {
                    body,
                    guard: counted,
                };
                match closer {
                    Some(closer) => tonic::body::Body::new(Watched::new(body, closer, stalled)),
                    None => tonic::body::Body::new(body),
                }
            }))
        })
    }
}

/// What the reader of a streamed body has taken.
#[derive(Default)]
struct Progress {
    /// Times the transport asked for a part.
    asked: AtomicU64,
    /// The last answer was a part, which the transport is sending or
    /// holding back until the reader's window opens.
    handed: AtomicBool,
}

/// A streamed body whose reader's connection is closed when a part it was
/// handed is not followed by the transport asking for the next within
/// `stalled` (checked every `stalled`, so it is closed within twice that).
struct Watched<B> {
    body: B,
    progress: Arc<Progress>,
    /// Ends the watch when the body is dropped.
    _watch: DropGuard,
}

impl<B> Watched<B> {
    fn new(body: B, closer: Closer, stalled: Duration) -> Self {
        let progress = Arc::new(Progress::default());
        let ended = CancellationToken::new();
        tokio::spawn(watch(progress.clone(), closer, stalled, ended.clone()));
        Self {
            body,
            progress,
            _watch: ended.drop_guard(),
        }
    }
}

async fn watch(
    progress: Arc<Progress>,
    closer: Closer,
    stalled: Duration,
    ended: CancellationToken,
) {
    let mut seen = None;
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep(stalled) => {}
        }
        let asked = progress.asked.load(Ordering::Acquire);
        if seen == Some(asked) && progress.handed.load(Ordering::Acquire) {
            tracing::warn!(
                stalled_s = stalled.as_secs_f64(),
                "closed a connection whose reader took no part of a streamed report for this long"
            );
            closer.close();
            return;
        }
        seen = Some(asked);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        this.progress
            .handed
            .store(matches!(frame, Poll::Ready(Some(Ok(_)))), Ordering::Release);
        this.progress.asked.fetch_add(1, Ordering::AcqRel);
        frame
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
    use std::convert::Infallible;

    use http_body::{Body, Frame};
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose parts come from a channel, as a report's do.
    struct Parts(mpsc::Receiver<&'static str>);

    impl Body for Parts {
        type Data = &'static [u8];
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|part| part.map(|p| Ok(Frame::data(p.as_bytes()))))
        }
    }

    /// Asks `body` for its next part once, as the transport does.
    async fn ask<B: Body + Unpin>(body: &mut B) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_part_the_reader_does_not_take_closes_its_connection() {
        let (parts, rx) = mpsc::channel(1);
        let closer = Closer::unattached();
        let mut body = Watched::new(Parts(rx), closer.clone(), Duration::from_secs(1));
        assert!(!ask(&mut body).await, "nothing ready yet");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !closer.closed(),
            "a server still producing is not a stalled reader"
        );
        parts.send("part").await.unwrap();
        assert!(ask(&mut body).await, "a part handed over");
        assert!(!closer.closed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(closer.closed(), "the reader never asked for the next");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_who_keeps_asking_keeps_its_connection() {
        let (parts, rx) = mpsc::channel(1);
        let closer = Closer::unattached();
        let mut body = Watched::new(Parts(rx), closer.clone(), Duration::from_secs(1));
        for _ in 0..10 {
            parts.send("part").await.unwrap();
            assert!(ask(&mut body).await);
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        assert!(!closer.closed());
        drop(body);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!closer.closed(), "a body dropped is no longer watched");
    }
}
