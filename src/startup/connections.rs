//! The gRPC listener's open connections, bounded. TLS handshakes are
//! bounded (`crate::tls` ends the oldest under way beyond a quarter of the
//! descriptors), but a client that finishes its handshake, or connects in
//! plaintext, may then hold its connection open with nothing on it but
//! answers to keepalive pings, for as long as it likes. Enough of them
//! would use every descriptor the process may open, and then no caller's
//! connection could be accepted, and no connection to the database or to a
//! processor opened. So at most [`max_connections`] are open at once (half
//! the descriptor limit, between 256 and 65,536), and a connection beyond
//! them closes the one that read or wrote least recently. A connection
//! that carries calls reads and writes by the millisecond, an idle one
//! only at its keepalive ping (every 30 seconds), so the connections closed
//! are idle ones while there are any; a gRPC client whose idle connection
//! was closed opens a new one for its next call. When every connection is
//! busy, the least recently active one gives way all the same (its calls
//! end `UNAVAILABLE`, which clients retry): the newcomer is as likely a
//! caller as the connections already open.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The fewest connections [`max_connections`] allows at once.
const MIN_CONNECTIONS: usize = 256;

/// The most [`max_connections`] allows: finding the least recently active
/// connection reads every one, so the table stays small enough to read
/// at each connection beyond it.
const MAX_CONNECTIONS: usize = 65_536;

/// How often, at most, closing connections for room is logged.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Most connections open at once on the gRPC listener, by default: half
/// the process's descriptor limit (its soft `RLIMIT_NOFILE`), between 256
/// and 65,536.
pub fn max_connections() -> usize {
    let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    (descriptors / 2).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The open connections of one listener.
#[derive(Clone)]
pub(super) struct Connections {
    most: usize,
    shared: Arc<Shared>,
}

struct Shared {
    /// Counts reads and writes on every connection: the order of
    /// activity.
    ticks: AtomicU64,
    table: Mutex<Table>,
    /// Closed for room since the last report, and when that was.
    report: Mutex<(u64, Option<Instant>)>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// By admission, oldest first.
    open: BTreeMap<u64, Arc<Entry>>,
}

/// One open connection, as the table sees it.
struct Entry {
    /// [`Shared::ticks`] at its last byte read or written, or at its
    /// admission.
    active: AtomicU64,
    /// Set when it is closed for room; its next read or write fails.
    closed: AtomicBool,
    /// The task waiting to read, and to write, woken when it is closed.
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Connections {
    /// A table of at most `most` open connections (at least one).
    pub fn new(most: usize) -> Self {
        Self {
            most: most.max(1),
            shared: Arc::new(Shared {
                ticks: AtomicU64::new(0),
                table: Mutex::new(Table::default()),
                report: Mutex::new((0, None)),
            }),
        }
    }

    /// Counts `io` among the open connections until it is dropped, closing
    /// the least recently active ones while `most` are open.
    pub fn admit<IO>(&self, io: IO) -> Tracked<IO> {
        let entry = Arc::new(Entry {
            active: AtomicU64::new(self.shared.tick()),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        let mut closed = 0;
        let mut table = self.shared.table.lock().expect("connections lock");
        while table.open.len() >= self.most {
            let quietest = table
                .open
                .iter()
                .min_by_key(|(_, e)| e.active.load(Ordering::Relaxed))
                .map(|(n, _)| *n);
            let Some(e) = quietest.and_then(|n| table.open.remove(&n)) else {
                break;
            };
            e.close();
            closed += 1;
        }
        let n = table.next;
        table.next += 1;
        table.open.insert(n, entry.clone());
        drop(table);
        if closed > 0 {
            self.shared.report(closed, self.most);
        }
        Tracked {
            io,
            entry,
            n,
            shared: self.shared.clone(),
        }
    }

    /// `incoming`, each connection admitted (see [`Connections::admit`])
    /// as it is accepted.
    pub fn count<S, IO, E>(self, incoming: S) -> impl Stream<Item = Result<Tracked<IO>, E>>
    where
        S: Stream<Item = Result<IO, E>>,
    {
        incoming.map(move |accepted| accepted.map(|io| self.admit(io)))
    }

    /// How many are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared
            .table
            .lock()
            .expect("connections lock")
            .open
            .len()
    }
}

impl Shared {
    fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed)
    }

    /// Logs connections closed for room, at most once every
    /// [`REPORT_EVERY`] (a flood would otherwise flood the log too).
    fn report(&self, closed: u64, most: usize) {
        let mut report = self.report.lock().expect("report lock");
        report.0 += closed;
        if report.1.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        tracing::warn!(
            closed = report.0,
            most,
            "closed the least recently active connections to make room: \
             this many are open on the gRPC listener"
        );
        *report = (0, Some(Instant::now()));
    }
}

impl Entry {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn check(&self) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a newer connection",
            ));
        }
        Ok(())
    }
}

/// What a call learns of its connection: what the connection itself tells
/// (`TcpConnectInfo`, or `TlsConnectInfo` over TLS), and a way to close
/// it.
#[derive(Clone)]
pub struct Conn<I> {
    /// What the connection tells.
    pub info: I,
    /// Closes it.
    pub closer: Closer,
}

/// Closes one connection: its next read or write fails, and the server
/// then drops it with every call on it.
#[derive(Clone)]
pub struct Closer(Arc<Entry>);

impl Closer {
    /// Closes the connection.
    pub fn close(&self) {
        self.0.close();
    }

    /// A closer of no connection, to see whether it was used.
    #[cfg(test)]
    pub(crate) fn unattached() -> Self {
        Self(Arc::new(Entry {
            active: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }))
    }

    /// Whether it closed its connection.
    #[cfg(test)]
    pub(crate) fn closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// The closer of the connection a call came on (its request's
    /// extensions), if it came through a counted listener.
    pub fn of(extensions: &http::Extensions) -> Option<Self> {
        let tcp = extensions.get::<Conn<tonic::transport::server::TcpConnectInfo>>();
        let tls = extensions.get::<Conn<crate::tls::server::TlsConnectInfo>>();
        tcp.map(|c| c.closer.clone())
            .or_else(|| tls.map(|c| c.closer.clone()))
    }
}

/// A connection counted among the open ones until dropped.
pub(super) struct Tracked<IO> {
    io: IO,
    entry: Arc<Entry>,
    n: u64,
    shared: Arc<Shared>,
}

impl<IO> Tracked<IO> {
    fn touch(&self) {
        self.entry
            .active
            .store(self.shared.tick(), Ordering::Relaxed);
    }
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        self.shared
            .table
            .lock()
            .expect("connections lock")
            .open
            .remove(&self.n);
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = Conn<IO::ConnectInfo>;
    fn connect_info(&self) -> Conn<IO::ConnectInfo> {
        Conn {
            info: self.io.connect_info(),
            closer: Closer(self.entry.clone()),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.entry.reader.register(cx.waker());
        self.entry.check()?;
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.entry.writer.register(cx.waker());
        self.entry.check()?;
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.entry.writer.register(cx.waker());
        self.entry.check()?;
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.entry.writer.register(cx.waker());
        self.entry.check()?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
