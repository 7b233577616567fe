//! The gRPC listener's open connections, bounded. TLS handshakes are
//! bounded (`crate::tls` ends the oldest under way beyond a quarter of the
//! descriptors), but a client that finishes its handshake, or connects in
//! plaintext, may then hold its connection open with nothing on it but
//! answers to keepalive pings, for as long as it likes. Enough of them
//! would use every descriptor the process may open, and then no caller's
//! connection could be accepted, and no connection to the database or to a
//! processor opened. So at most `--max-connections` are open at once (by
//! default [`max_connections`]: half the descriptor limit, between 256 and
//! 65,536), and a connection beyond
//! them closes the quietest: one with no call in progress (a `WatchRequest`
//! stream counts as one as long as it is open) before one with calls, and
//! among those alike the one that read or wrote least recently. A caller
//! can keep calls in progress only within the bounds on calls in flight
//! and on watches, so connections held open with nothing asked are closed
//! first; a gRPC client whose idle connection was closed opens a new one
//! for its next call. When every connection has calls in progress, the
//! quietest gives way all the same (its calls end in an error): the
//! newcomer is as likely a caller as the connections already open.
//! Finding the quietest reads every connection, so each time the table is
//! full it closes a sixty-fourth of it at once, and the next connections
//! find room without reading them again. `/metrics` shows the connections
//! open, the bound, and those closed, by reason
//! (`crate::telemetry::ConnectionStats`).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use crate::telemetry::{ConnectionClosed, ConnectionStats};

/// The fewest connections [`max_connections`] allows at once.
const MIN_CONNECTIONS: usize = 256;

/// The most [`max_connections`] allows.
const MAX_CONNECTIONS: usize = 65_536;

/// The share of a full table closed at once.
const CLOSED_AT_ONCE: usize = 64;

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
    /// What `/metrics` shows of the table.
    stats: Arc<ConnectionStats>,
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
    /// Calls in progress on it (see [`ConnHandle::calling`]).
    calls: AtomicUsize,
    /// Set when the server closes it (for room, or for a stalled reader)
    /// or drops it; its next read or write fails.
    closed: AtomicBool,
    /// The task waiting to read, and to write, woken when it is closed.
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Connections {
    /// A table of at most `most` open connections (at least one),
    /// counting into `stats`.
    pub fn new(most: usize, stats: Arc<ConnectionStats>) -> Self {
        let most = most.max(1);
        stats.bounded(most);
        Self {
            most,
            shared: Arc::new(Shared::new(stats)),
        }
    }

    /// Counts `io` among the open connections until it is dropped, closing
    /// the quietest ones while `most` are open.
    pub fn admit<IO>(&self, io: IO) -> Tracked<IO> {
        let entry = Arc::new(Entry::new(self.shared.tick()));
        let mut closed = 0;
        let mut table = self.shared.table.lock().expect("connections lock");
        if table.open.len() >= self.most {
            let excess = table.open.len() + 1 - self.most;
            let count = excess.max(self.most / CLOSED_AT_ONCE).max(1);
            let mut quiet: Vec<_> = table
                .open
                .iter()
                .map(|(n, e)| {
                    (
                        e.calls.load(Ordering::Relaxed) > 0,
                        e.active.load(Ordering::Relaxed),
                        *n,
                    )
                })
                .collect();
            if count < quiet.len() {
                quiet.select_nth_unstable(count - 1);
            }
            for (_, _, n) in quiet.into_iter().take(count) {
                if let Some(e) = table.open.remove(&n)
                    && e.close()
                {
                    closed += 1;
                }
            }
        }
        let n = table.next;
        table.next += 1;
        table.open.insert(n, entry.clone());
        drop(table);
        self.shared.stats.opened();
        if closed > 0 {
            self.shared.stats.closed(ConnectionClosed::Room, closed);
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
    fn new(stats: Arc<ConnectionStats>) -> Self {
        Self {
            ticks: AtomicU64::new(0),
            table: Mutex::new(Table::default()),
            report: Mutex::new((0, None)),
            stats,
        }
    }

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
            "closed the quietest connections to make room: \
             this many are open on the gRPC listener"
        );
        *report = (0, Some(Instant::now()));
    }
}

impl Entry {
    fn new(tick: u64) -> Self {
        Self {
            active: AtomicU64::new(tick),
            calls: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }
    }

    /// Closes it; whether this closed it (false: it was closed already).
    fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.reader.wake();
        self.writer.wake();
        first
    }

    fn check(&self) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the server (see its log)",
            ));
        }
        Ok(())
    }
}

/// What a call learns of its connection: what the connection itself tells
/// (`TcpConnectInfo`, or `TlsConnectInfo` over TLS), and a handle on it.
#[derive(Clone)]
pub struct Conn<I> {
    /// What the connection tells.
    pub info: I,
    /// The connection in the table.
    pub handle: ConnHandle,
}

/// One connection in the table, as its calls see it.
#[derive(Clone)]
pub struct ConnHandle(Arc<Entry>, Arc<Shared>);

impl ConnHandle {
    /// Closes the connection for `why`: its next read or write fails,
    /// and the server then drops it with every call on it.
    pub fn close(&self, why: ConnectionClosed) {
        if self.0.close() {
            self.1.stats.closed(why, 1);
        }
    }

    /// Counts a call in progress on the connection until the guard drops.
    pub fn calling(&self) -> Calling {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        Calling(self.0.clone())
    }

    /// A handle on no connection, to see whether it was closed.
    #[cfg(test)]
    pub(crate) fn unattached() -> Self {
        let stats = Arc::new(ConnectionStats::default());
        Self(Arc::new(Entry::new(0)), Arc::new(Shared::new(stats)))
    }

    /// Whether it closed its connection.
    #[cfg(test)]
    pub(crate) fn closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// The handle of the connection a call came on (its request's
    /// extensions), if it came through a counted listener.
    pub fn of(extensions: &http::Extensions) -> Option<Self> {
        let tcp = extensions.get::<Conn<tonic::transport::server::TcpConnectInfo>>();
        let tls = extensions.get::<Conn<crate::tls::server::TlsConnectInfo>>();
        tcp.map(|c| c.handle.clone())
            .or_else(|| tls.map(|c| c.handle.clone()))
    }
}

/// A call in progress on a connection, counted until dropped.
pub struct Calling(Arc<Entry>);

impl Drop for Calling {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
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
    /// Its handle, as its calls get it.
    #[cfg(test)]
    fn handle(&self) -> ConnHandle {
        ConnHandle(self.entry.clone(), self.shared.clone())
    }

    fn touch(&self) {
        self.entry
            .active
            .store(self.shared.tick(), Ordering::Relaxed);
    }

    /// `written`, as it is, once the connection is counted active if it
    /// wrote anything.
    fn wrote(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
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
        // A close that comes after this is not counted. And this runs
        // before the connection's socket is dropped, so a peer that sees
        // the end sees it counted out.
        self.entry.closed.store(true, Ordering::Release);
        self.shared.stats.gone();
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = Conn<IO::ConnectInfo>;
    fn connect_info(&self) -> Conn<IO::ConnectInfo> {
        Conn {
            info: self.io.connect_info(),
            handle: ConnHandle(self.entry.clone(), self.shared.clone()),
        }
    }
}

#[path = "connections_io.rs"]
mod reads_writes;

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
