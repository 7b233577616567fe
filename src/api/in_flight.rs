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
//! that never opens its flow-control window. The place of a reader who
//! stops reading is bounded in time: data the server has ready that the
//! reader does not take within `--stalled-reader-timeout` (60 s unless
//! set; the transport holds the data back until the reader's flow-control
//! window opens) closes the reader's connection, and with it the stream
//! and its place. The time counts only while data waits for the reader,
//! not while the server produces the next part, and it starts again at
//! each piece of at most 64 KiB handed to the transport, so a reader who
//! takes data at any steady pace stays connected. The reader's other
//! calls on that connection end too: they were made on a connection that
//! has stopped taking what it asked for.
//! Every call is also counted on its connection until its response has
//! been sent, so that the connection table (`crate::startup::connections`)
//! closes idle connections before busy ones.
//! `WatchRequest` streams, which stay open for days, count only until they
//! open: their own limit ([`super::watch_limits::WatchLimits`]) bounds them.
//! Health checks are exempt, so probes keep answering under load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Frame;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::{Layer, Service};
use tracing::Instrument;

use super::limits::{exhausted, is_health_check, refusal};
use crate::in_progress::{HeldBody, InProgress};
use crate::startup::ConnHandle;
use crate::telemetry::ConnectionClosed;

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
        let conn = ConnHandle::of(req.extensions());
        let stalled = self.stalled;
        Box::pin(async move {
            // A call in progress on its connection until its response has
            // been sent (see `crate::startup::connections`).
            let calling = conn.as_ref().map(ConnHandle::calling);
            let response = inner.call(req).await?;
            if !whole_body {
                return Ok(response.map(|body| {
                    tonic::body::Body::new(HeldBody {
                        body,
                        guard: calling,
                    })
                }));
            }
            let held = response.map(|body| HeldBody {
                body,
                guard: (calling, counted),
            });
            Ok(match conn {
                Some(conn) => {
                    held.map(|body| tonic::body::Body::new(Watched::new(body, conn, stalled)))
                }
                None => held.map(tonic::body::Body::new),
            })
        })
    }
}

/// What the reader of a streamed body has taken.
struct Progress {
    start: Instant,
    /// Milliseconds from `start` to the last part handed to the transport,
    /// which is sending it or holding it back until the reader's window
    /// opens; [`NOT_HANDED`] while the transport waits for the next part.
    handed_at: AtomicU64,
}

/// [`Progress::handed_at`] while no part waits for the reader.
const NOT_HANDED: u64 = u64::MAX;

/// The largest piece of a part handed to the transport at once, so that a
/// reader who reads on, however slowly, asks for the next piece well
/// within the stall limit (the transport asks for more only once most of
/// what it holds has gone).
const PIECE: usize = 64 * 1024;

/// A streamed body whose reader's connection is closed when a piece it
/// was handed is not followed by the transport asking for the next within
/// `stalled`.
struct Watched<B> {
    body: B,
    /// The rest of a part handed over in pieces.
    rest: Option<Bytes>,
    progress: Arc<Progress>,
    /// Ends the watch when the body is dropped.
    _watch: DropGuard,
}

impl<B> Watched<B> {
    fn new(body: B, conn: ConnHandle, stalled: Duration) -> Self {
        let progress = Arc::new(Progress {
            start: Instant::now(),
            handed_at: AtomicU64::new(NOT_HANDED),
        });
        let ended = CancellationToken::new();
        let watch = watch(progress.clone(), conn, stalled, ended.clone());
        tokio::spawn(watch.instrument(tracing::Span::current()));
        Self {
            body,
            rest: None,
            progress,
            _watch: ended.drop_guard(),
        }
    }
}

async fn watch(
    progress: Arc<Progress>,
    conn: ConnHandle,
    stalled: Duration,
    ended: CancellationToken,
) {
    loop {
        let handed = progress.handed_at.load(Ordering::Acquire);
        let next = if handed == NOT_HANDED {
            Instant::now() + stalled
        } else {
            let due = progress.start + Duration::from_millis(handed) + stalled;
            if Instant::now() >= due {
                tracing::warn!(
                    stalled_s = stalled.as_secs_f64(),
                    "closed a connection whose reader took no part of a streamed report for this long"
                );
                conn.close(ConnectionClosed::StalledReader);
                return;
            }
            due
        };
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match this.rest.take() {
            Some(rest) => Poll::Ready(Some(Ok(Frame::data(rest)))),
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        let polled = match polled {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_data() {
                Ok(mut data) if data.len() > PIECE => {
                    let piece = data.split_to(PIECE);
                    this.rest = Some(data);
                    Frame::data(piece)
                }
                Ok(data) => Frame::data(data),
                Err(frame) => frame,
            }))),
            other => other,
        };
        let handed = match polled {
            Poll::Ready(Some(Ok(_))) => {
                u64::try_from(this.progress.start.elapsed().as_millis()).unwrap_or(NOT_HANDED - 1)
            }
            _ => NOT_HANDED,
        };
        this.progress.handed_at.store(handed, Ordering::Release);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.rest {
            Some(_) => http_body::SizeHint::default(),
            None => self.body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Body;
    use tokio::sync::mpsc;

    use super::*;

    /// A body whose parts come from a channel, as a report's do.
    struct Parts(mpsc::Receiver<Bytes>);

    impl Body for Parts {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0
                .poll_recv(cx)
                .map(|part| part.map(|p| Ok(Frame::data(p))))
        }
    }

    /// Asks `body` for its next piece once, as the transport does: its
    /// length, if one was ready.
    async fn ask<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Option<usize> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame.into_data().ok().map(|d| d.len()),
                _ => None,
            })
        })
        .await
    }

    fn part(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_part_the_reader_does_not_take_closes_its_connection() {
        let (parts, rx) = mpsc::channel(1);
        let conn = ConnHandle::unattached();
        let mut body = Watched::new(Parts(rx), conn.clone(), Duration::from_secs(1));
        assert_eq!(ask(&mut body).await, None, "nothing ready yet");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !conn.closed(),
            "a server still producing is not a stalled reader"
        );
        parts.send(part(10)).await.unwrap();
        assert_eq!(ask(&mut body).await, Some(10), "a part handed over");
        tokio::time::sleep(Duration::from_millis(990)).await;
        assert!(!conn.closed(), "within the limit");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(conn.closed(), "the reader did not ask for the next in time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_who_keeps_asking_keeps_its_connection() {
        let (parts, rx) = mpsc::channel(1);
        let conn = ConnHandle::unattached();
        let mut body = Watched::new(Parts(rx), conn.clone(), Duration::from_secs(1));
        for _ in 0..10 {
            parts.send(part(10)).await.unwrap();
            assert_eq!(ask(&mut body).await, Some(10));
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        assert!(!conn.closed());
        drop(body);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!conn.closed(), "a dropped body is not watched");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_part_is_handed_over_in_pieces_each_with_its_own_time() {
        let (parts, rx) = mpsc::channel(1);
        let conn = ConnHandle::unattached();
        let mut body = Watched::new(Parts(rx), conn.clone(), Duration::from_secs(1));
        parts.send(part(2 * PIECE + 1)).await.unwrap();
        for len in [PIECE, PIECE, 1] {
            assert_eq!(ask(&mut body).await, Some(len));
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        assert!(!conn.closed(), "a slow reader that reads on is kept");
        drop(parts);
        assert_eq!(ask(&mut body).await, None, "the end");
    }
}
