//! The gRPC listener's connections, as `/metrics` shows them: how many are
//! open against the most it keeps, and how many the server closed, by
//! reason. The listener's table (`crate::startup`) counts into a shared
//! [`ConnectionStats`]; the instruments read it when metrics are
//! collected, so counting costs an atomic add and no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use super::families::{CONNECTIONS, CONNECTIONS_CLOSED, CONNECTIONS_MAX};

/// Why the server closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionClosed {
    /// The listener was at its bound: the quietest gave way to a newcomer.
    Room,
    /// A reader stopped reading a streamed report or export.
    StalledReader,
}

impl ConnectionClosed {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Room => "room",
            Self::StalledReader => "stalled_reader",
        }
    }
}

/// What the gRPC listener's table counts.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicU64,
    most: AtomicU64,
    room: AtomicU64,
    stalled_reader: AtomicU64,
}

impl ConnectionStats {
    /// The listener keeps at most `most` open.
    pub fn bounded(&self, most: usize) {
        self.most.store(most as u64, Ordering::Relaxed);
    }

    /// A connection was accepted.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection is gone, whoever ended it.
    pub fn gone(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The server closed `n` connections, for `why`.
    pub fn closed(&self, why: ConnectionClosed, n: u64) {
        self.closed_count(why).fetch_add(n, Ordering::Relaxed);
    }

    /// Connections the server closed for `why` so far.
    pub fn closed_for(&self, why: ConnectionClosed) -> u64 {
        self.closed_count(why).load(Ordering::Relaxed)
    }

    fn closed_count(&self, why: ConnectionClosed) -> &AtomicU64 {
        match why {
            ConnectionClosed::Room => &self.room,
            ConnectionClosed::StalledReader => &self.stalled_reader,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// The instruments reading `stats`.
pub(super) fn register(meter: &Meter, stats: Arc<ConnectionStats>) {
    let s = stats.clone();
    meter
        .u64_observable_gauge(CONNECTIONS.name)
        .with_description(CONNECTIONS.help)
        .with_callback(move |o| o.observe(s.open(), &[]))
        .build();
    let s = stats.clone();
    meter
        .u64_observable_gauge(CONNECTIONS_MAX.name)
        .with_description(CONNECTIONS_MAX.help)
        .with_callback(move |o| o.observe(s.most.load(Ordering::Relaxed), &[]))
        .build();
    meter
        .u64_observable_counter(CONNECTIONS_CLOSED.name)
        .with_description(CONNECTIONS_CLOSED.help)
        .with_callback(move |o| {
            for why in [ConnectionClosed::Room, ConnectionClosed::StalledReader] {
                o.observe(
                    stats.closed_for(why),
                    &[KeyValue::new("reason", why.as_str())],
                );
            }
        })
        .build();
}
