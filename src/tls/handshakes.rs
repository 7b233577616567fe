//! The TLS handshakes under way on one listener, bounded. A handshake has
//! [`HANDSHAKE_TIMEOUT`] to finish, but a client that connects and sends
//! nothing holds a socket and a task for that long, and clients opening
//! connections faster than they time out would hold as many as the
//! process may open, at which point no one's connection is accepted.
//! At most [`MAX_HANDSHAKES`] are under way at once: a connection beyond
//! them ends the oldest handshake still under way. A real client's
//! handshake takes milliseconds, so it is never the oldest for long, and
//! gets through however many connections others leave silent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes under way at once on one listener.
pub const MAX_HANDSHAKES: usize = 1024;

/// The handshakes under way on one listener, oldest first.
#[derive(Default)]
pub(super) struct Handshakes {
    next: u64,
    under_way: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
}

impl Handshakes {
    /// Starts one more handshake, ending the oldest under way if `most`
    /// already are.
    pub fn start(&mut self, most: usize) -> Handshake {
        let n = self.next;
        self.next += 1;
        let ended = CancellationToken::new();
        let mut under_way = self.under_way.lock().expect("handshakes lock");
        while under_way.len() >= most.max(1) {
            match under_way.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        under_way.insert(n, ended.clone());
        Handshake {
            ended,
            n,
            under_way: self.under_way.clone(),
        }
    }

    /// How many are under way.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.under_way.lock().expect("handshakes lock").len()
    }
}

/// One handshake under way, until dropped.
pub(super) struct Handshake {
    /// Cancelled when a newer connection needs its place.
    pub ended: CancellationToken,
    n: u64,
    under_way: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.under_way
            .lock()
            .expect("handshakes lock")
            .remove(&self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_beyond_the_most_ends_the_oldest_under_way() {
        let mut handshakes = Handshakes::default();
        let first = handshakes.start(2);
        let second = handshakes.start(2);
        assert_eq!(handshakes.len(), 2);
        let third = handshakes.start(2);
        assert!(first.ended.is_cancelled(), "the oldest gives way");
        assert!(!second.ended.is_cancelled() && !third.ended.is_cancelled());
        drop(second);
        assert_eq!(handshakes.len(), 1, "a finished one leaves");
        let fourth = handshakes.start(2);
        assert!(!third.ended.is_cancelled(), "room without ending any");
        drop((first, third, fourth));
        assert_eq!(handshakes.len(), 0);
    }
}
