//! What tests may swap out of a running orchestrator.

use std::sync::Arc;

use crate::admin::AdminLimits;
use crate::clock::{Clock, SystemClock};
use crate::dispatch::adapter::Adapter;
use crate::dispatch::lookup::{Lookup, Resolver};
#[cfg(doc)]
use crate::dispatch::push::PushAdapters;

/// What tests may swap out.
pub struct Options {
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
    /// Run the dispatcher loop in the background (tests that drive it by
    /// hand with [`Dispatcher::run_once`] turn this off).
    pub run_dispatcher: bool,
    /// Run the data protection task in the background: resealing at
    /// start, then erasure every `--erase-interval` (tests that erase and
    /// reseal by hand, with [`crate::store::Store::erase_finished`] and
    /// [`crate::store::Store::reseal`], turn this off).
    pub run_protection: bool,
    /// How instructions reach push processors (`None`: every protocol,
    /// [`PushAdapters`], offering OpenDSR callbacks under `--public-url`).
    pub adapter: Option<Arc<dyn Adapter>>,
    /// Where processors' host names resolve, for registration and for
    /// every connection to them (`None`: the system's resolver).
    pub resolver: Option<Arc<dyn Resolver>>,
    /// Bounds on the admin listener's connections.
    pub admin_limits: AdminLimits,
    /// Most TLS handshakes under way at once on the gRPC listener (`None`:
    /// [`crate::tls::max_handshakes`]).
    pub max_handshakes: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            run_dispatcher: true,
            run_protection: true,
            adapter: None,
            resolver: None,
            admin_limits: AdminLimits::default(),
            max_handshakes: None,
        }
    }
}

impl Options {
    /// How processors' names resolve, under the plaintext rule
    /// (`--allow-plaintext-processors`).
    pub(crate) fn lookup(&self, allow_plaintext: bool) -> Lookup {
        match &self.resolver {
            Some(resolver) => Lookup::new(resolver.clone(), allow_plaintext),
            None => Lookup::system(allow_plaintext),
        }
    }
}
