//! How the admin listener holds its connections. Kubernetes probes and a
//! scraper make a handful of short calls, so the listener keeps at most
//! [`AdminLimits::connections`] connections open and gives each request's
//! head [`AdminLimits::header_timeout`] to arrive, counted from when the
//! connection becomes ready for it (a keep-alive connection left idle is
//! closed after the same time). A client that opens connections and
//! trickles bytes into them holds a slot for at most that long, so the
//! probes behind it wait seconds, not forever; while every slot is held,
//! new connections wait in the kernel's backlog instead of being refused.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
            connections: 64,
            header_timeout: Duration::from_secs(10),
        }
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
    let count = limits.connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(count));
    let mut conns = std::pin::pin!(conns);
    loop {
        // A slot before the next connection: the ones beyond the limit
        // stay in the backlog until one closes.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
        };
        let io = tokio::select! {
            _ = shutdown.cancelled() => break,
            io = conns.next() => match io {
                Some(io) => io,
                None => break,
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "an admin connection ended with an error");
            }
        });
    }
    // Every slot back: every connection has closed.
    let all = u32::try_from(count).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}
