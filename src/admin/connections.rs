//! How the admin listener holds its connections. Kubernetes probes and a
//! scraper make a handful of short calls; a client that opens connections
//! and trickles bytes into them must not keep those calls out.
//!
//! - A request's head has [`AdminLimits::header_timeout`] to arrive,
//!   counted from when the connection is ready for it (a keep-alive
//!   connection left idle is closed after the same time).
//! - At most [`AdminLimits::connections`] are served. A connection beyond
//!   them closes the oldest one with no request in progress (none being
//!   read or answered), so a probe, which sends its request at once, is
//!   served however many connections others hold open without requests.
//!   A response counts as answered once its end is handed to the
//!   connection; one closed while still writing it to a slow reader
//!   finishes writing it first, within the header timeout, beside the
//!   connections served. At most as many again finish so at once; beyond
//!   them a connection closed for a newer one is dropped at once.
//!   While every connection has a request in progress, the new one waits
//!   for the first of them to finish its response.
//! - At shutdown the requests in progress finish, within the header
//!   timeout, and the connections close.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::in_progress::HeldBody;

/// Bounds on the admin listener's connections.
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Connections open at once.
    pub connections: usize,
    /// How long a request's head may take to arrive.
    pub header_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            connections: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// [`Open::busy`] of a connection chosen to close for a newer one.
const CLOSING: usize = usize::MAX;

/// One open connection.
#[derive(Default)]
struct Open {
    /// Its requests in progress, or [`CLOSING`].
    busy: AtomicUsize,
    /// Closes it.
    close: CancellationToken,
}

impl Open {
    /// Counts a request in progress, unless the connection was chosen to
    /// close: one atomic step with [`Connections::make_room`]'s choice,
    /// so a connection is never closed under a request it has begun.
    fn begin(self: &Arc<Self>, connections: &Arc<Connections>) -> Option<Busy> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match n {
                CLOSING => None,
                n => Some(n + 1),
            })
            .ok()
            .map(|_| Busy(self.clone(), connections.clone()))
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Arc<Open>>>,
    /// Told when a connection closes or finishes a response.
    freed: Notify,
    /// Connections closed for newer ones that are finishing a response.
    finishing: AtomicUsize,
}

impl Connections {
    /// Makes room for one more connection within `most`: closes the
    /// oldest with no request in progress if need be. Returns whether
    /// there is room.
    fn make_room(&self, most: usize) -> bool {
        let mut open = self.open.lock().expect("admin connections lock");
        if open.len() < most.max(1) {
            return true;
        }
        let idle = open
            .iter()
            .find(|(_, c)| {
                c.busy
                    .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .map(|(n, _)| *n);
        match idle.and_then(|n| open.remove(&n)) {
            Some(oldest) => {
                oldest.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection closed for a newer one, finishing the response it is
/// writing: counted until dropped ([`Connections::finish`]).
struct Finishing<'a>(&'a Connections);

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.0.finishing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    /// Lets a connection closed for a newer one finish its response, unless
    /// `most` already are: then it is dropped at once, so that readers who
    /// never read keep no more than `most` descriptors beyond the bound.
    fn finish(&self, most: usize) -> Option<Finishing<'_>> {
        self.finishing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most.max(1)).then_some(n + 1)
            })
            .ok()
            .map(|_| Finishing(self))
    }
}

/// Takes a connection's entry out when its task ends.
struct Registered<'a>(&'a Connections, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0
            .open
            .lock()
            .expect("admin connections lock")
            .remove(&self.1);
        self.0.freed.notify_waiters();
    }
}

/// Counts a request in progress on its connection until dropped: kept
/// by the response's body until it has been written ([`Open::begin`]).
struct Busy(Arc<Open>, Arc<Connections>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.1.freed.notify_waiters();
        }
    }
}

/// A connection's stream, whose reads end once it is chosen to close for a
/// newer connection: a request head still arriving ends there, and the
/// connection with it, while a response being written is finished.
struct Closable<I> {
    io: I,
    close: CancellationToken,
}

impl<I: AsyncRead + Unpin> AsyncRead for Closable<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.close.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Closable<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on each connection `conns` yields until `shutdown`, then
/// lets the requests under way finish and returns when every connection
/// has closed.
pub async fn serve<I>(
    conns: impl Stream<Item = I>,
    app: Router,
    limits: AdminLimits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connections = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let mut conns = std::pin::pin!(conns);
    for n in 0u64.. {
        let io = tokio::select! {
            _ = shutdown.cancelled() => break,
            io = conns.next() => match io {
                Some(io) => io,
                None => break,
            },
        };
        // Room, or else wait for a connection to finish its response.
        loop {
            let freed = connections.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if connections.make_room(limits.connections) {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tasks.close();
                    tasks.wait().await;
                    return;
                }
                _ = freed => {}
            }
        }
        let open = Arc::new(Open::default());
        connections
            .open
            .lock()
            .expect("admin connections lock")
            .insert(n, open.clone());
        let (app, connections, shutdown) = (app.clone(), connections.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _registered = Registered(&connections, n);
            let service = hyper::service::service_fn(|req| {
                // A connection chosen to close is not counted: its reads
                // have ended, so it answers at most a request it had
                // already read.
                let busy = open.begin(&connections);
                let app = app.clone();
                async move {
                    let response = app
                        .oneshot(req)
                        .await
                        .map_err(|never: Infallible| match never {})?;
                    Ok::<_, Infallible>(response.map(|body| HeldBody { body, guard: busy }))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                // A read that ends while a response is written (a client
                // that half-closed, or `Closable`) lets it finish.
                .half_close(true);
            let io = Closable {
                io,
                close: open.close.clone(),
            };
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let closing = async {
                tokio::select! {
                    _ = open.close.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
            };
            let served = tokio::select! {
                served = conn.as_mut() => served,
                // Closed for a newer connection (its reads end at once, see
                // `Closable`), or shutting down: an idle connection closes
                // at once, and one whose response's end was handed over
                // (its request counted as done) but not yet written
                // finishes writing it first, within the header timeout, so
                // that a slow reader does not get a response cut short.
                // Closed for a newer one while the bound's worth of others
                // are finishing so, it is dropped at once.
                _ = closing => {
                    let finishing = connections.finish(limits.connections);
                    if finishing.is_none() && !shutdown.is_cancelled() {
                        Ok(())
                    } else {
                        conn.as_mut().graceful_shutdown();
                        tokio::time::timeout(limits.header_timeout, conn)
                            .await
                            .unwrap_or(Ok(()))
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "an admin connection ended with an error");
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
