//! The TLS handshakes under way on one listener, bounded. A handshake has
//! [`HANDSHAKE_TIMEOUT`] to finish, but a client that connects and sends
//! nothing holds a socket and a task for that long, and clients opening
//! connections faster than they time out would hold every descriptor the
//! process may open, at which point no one's connection is accepted. So
//! at most [`max_handshakes`] are under way at once (a quarter of the
//! descriptor limit, 1,024 at least), counted until the connection is
//! handed to the server, and a connection beyond them ends the oldest
//! still under way. Silent connections then cost at most that many
//! descriptors, and a real client's handshake, which takes milliseconds,
//! is ended only by as many connections arriving while it lasts: as many
//! as it took to use up the descriptors before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fewest handshakes [`max_handshakes`] allows at once.
const MIN_HANDSHAKES: usize = 1024;

/// Most handshakes under way at once on one listener, by default: a
/// quarter of the process's descriptor limit (its soft `RLIMIT_NOFILE`),
/// and at least 1,024.
pub fn max_handshakes() -> usize {
    let descriptors = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    (descriptors / 4).clamp(MIN_HANDSHAKES, 1 << 20)
}

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
    fn the_most_under_way_is_a_quarter_of_the_descriptors_and_1024_at_least() {
        let most = max_handshakes();
        assert!((MIN_HANDSHAKES..=1 << 20).contains(&most), "{most}");
    }

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
