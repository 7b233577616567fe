//! The keys OpenDSR processors sign their status callbacks with, fetched
//! from the certificate each one's discovery document names, and the
//! checks of a callback's signature against them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

use super::http_clients::HttpClients;
use crate::clock::Clock;
use crate::domain::{ProcessorId, ProcessorTls, Timestamp};
use crate::wire::opendsr as wire;

/// Why a callback is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `X-OpenDSR-Signature`.
    #[error("the callback is not signed (no X-OpenDSR-Signature)")]
    Unsigned,
    /// A signature that does not verify with the processor's key.
    #[error("the callback's signature does not verify with the processor's certificate")]
    BadSignature,
    /// The processor's certificate could not be had, and why: for the
    /// server's log, not for the caller, who is not yet known to be the
    /// processor (what a fetch ran into can name the processor's
    /// addresses and settings).
    #[error(
        "the processor's certificate could not be fetched (the server's log says why): retry later"
    )]
    NoCertificate(String),
}

/// How long a processor's certificate is used before it is fetched again.
const KEY_TTL: Duration = Duration::from_secs(3600);
/// Least time between fetches after a signature failed to verify (the
/// processor may have rotated its key).
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The keys OpenDSR processors sign their callbacks with: the public key
/// of the certificate each one's `/discovery` names, kept per processor
/// and base URL and fetched again hourly, or when a signature fails to
/// verify (at most every 30 s). A fetch that failed is not tried again for
/// 30 s either: anyone may post a callback with some signature, and each
/// would otherwise make the server call the processor twice. Callbacks
/// that need a fetch at once wait for one, not one each. The fetches
/// connect where the lookup allows, as deliveries do; the certificate's
/// URL, which no registration checked, is checked by the registration's
/// rules first.
pub struct CallbackKeys {
    clients: HttpClients,
    keys: Mutex<HashMap<KeyOf, Kept>>,
    /// When a fetch last failed, per processor and base URL.
    failed: Mutex<HashMap<KeyOf, Timestamp>>,
    /// Held while a fetch runs, per processor and base URL.
    fetching: Gates,
    clock: Arc<dyn Clock>,
}

impl CallbackKeys {
    /// Keys fetched through connections that resolve names with `lookup`,
    /// their age told by `clock`.
    pub fn new(lookup: super::lookup::Lookup, clock: Arc<dyn Clock>) -> Self {
        Self {
            clients: HttpClients::new(lookup),
            keys: Mutex::default(),
            failed: Mutex::default(),
            fetching: Mutex::default(),
            clock,
        }
    }
}

/// A processor's key (PKCS#1 DER) and when it was fetched.
type Kept = (Vec<u8>, Timestamp);

/// Whose key: the processor and its base URL.
type KeyOf = (ProcessorId, String);

/// The gates of the fetches, per processor and base URL.
type Gates = Mutex<HashMap<KeyOf, Arc<tokio::sync::Mutex<()>>>>;

/// One call's hold on the gate of a key's fetch; the gate goes when the
/// last call holding or waiting for it ends, however it ends.
struct Gate<'a>(Arc<tokio::sync::Mutex<()>>, &'a Gates, KeyOf);

impl<'a> Gate<'a> {
    fn take(gates: &'a Gates, key_of: &KeyOf) -> Self {
        let gate = gates
            .lock()
            .expect("keys lock")
            .entry(key_of.clone())
            .or_default()
            .clone();
        Self(gate, gates, key_of.clone())
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut gates = self.1.lock().expect("keys lock");
        if Arc::strong_count(&self.0) == 2
            && gates.get(&self.2).is_some_and(|g| Arc::ptr_eq(g, &self.0))
        {
            gates.remove(&self.2);
        }
    }
}

impl CallbackKeys {
    /// Checks that `signature` (the header's value, base64) is the
    /// processor's RSA-SHA256 signature of `body`.
    pub async fn verify(
        &self,
        processor: &ProcessorId,
        url: &str,
        tls: Option<&ProcessorTls>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refused> {
        use base64::Engine;
        let signature = signature.ok_or(Refused::Unsigned)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let key_of = (processor.clone(), url.to_string());
        let verifies = |key: &[u8]| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
                .verify(body, &signature)
                .is_ok()
        };
        if let Some(decided) = self.without_fetch(&key_of, verifies) {
            return decided;
        }
        let gate = Gate::take(&self.fetching, &key_of);
        let _fetching = gate.0.lock().await;
        // A fetch that ended while this call waited decides it as well.
        match self.without_fetch(&key_of, verifies) {
            Some(decided) => decided,
            None => self.fetch_and_keep(&key_of, url, tls, verifies).await,
        }
    }

    /// Fetches the key for `key_of`, keeps it (or when the fetch failed),
    /// and checks the signature with it.
    async fn fetch_and_keep(
        &self,
        key_of: &KeyOf,
        url: &str,
        tls: Option<&ProcessorTls>,
        verifies: impl Fn(&[u8]) -> bool,
    ) -> Result<(), Refused> {
        let now = self.clock.now();
        let key = match self.fetch(url, tls).await {
            Ok(key) => key,
            Err(why) => {
                self.failed
                    .lock()
                    .expect("keys lock")
                    .insert(key_of.clone(), now);
                return Err(Refused::NoCertificate(why));
            }
        };
        self.failed.lock().expect("keys lock").remove(key_of);
        let ok = verifies(&key);
        self.keys
            .lock()
            .expect("keys lock")
            .insert(key_of.clone(), (key, now));
        if ok {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }

    /// The answer the key kept for `key_of`, or its last failed fetch,
    /// gives without fetching: `None` when a fetch is due.
    fn without_fetch(
        &self,
        key_of: &KeyOf,
        verifies: impl Fn(&[u8]) -> bool,
    ) -> Option<Result<(), Refused>> {
        let now = self.clock.now();
        let within = |at: &Timestamp, span: Duration| (now - *at).to_std().is_ok_and(|d| d < span);
        let kept = self.keys.lock().expect("keys lock").get(key_of).cloned();
        if let Some((key, at)) = &kept {
            if verifies(key) && within(at, KEY_TTL) {
                return Some(Ok(()));
            }
            if within(at, REFETCH_AFTER) {
                return Some(Err(Refused::BadSignature));
            }
        }
        let failed = self.failed.lock().expect("keys lock").get(key_of).copied();
        if failed.is_some_and(|at| within(&at, REFETCH_AFTER)) {
            return Some(Err(Refused::NoCertificate(format!(
                "its last fetch failed less than {REFETCH_AFTER:?} ago"
            ))));
        }
        None
    }

    /// The RSA public key (PKCS#1 DER) of the certificate the processor's
    /// discovery document names.
    async fn fetch(&self, url: &str, tls: Option<&ProcessorTls>) -> Result<Vec<u8>, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        let client = self.clients.get(url, tls).map_err(|e| fail("client", &e))?;
        let timeout = Duration::from_secs(10);
        let discovery: wire::Discovery = client
            .get(format!("{}/discovery", url.trim_end_matches('/')))
            .timeout(timeout)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail("discovery", &e))?
            .json()
            .await
            .map_err(|e| fail("discovery", &e))?;
        let certificate = self
            .clients
            .may_fetch(&discovery.processor_certificate)
            .await
            .map_err(|e| fail("certificate", &e))?;
        let client = self
            .clients
            .get(&certificate, tls)
            .map_err(|e| fail("client", &e))?;
        let pem = client
            .get(&certificate)
            .timeout(timeout)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail("certificate", &e))?
            .bytes()
            .await
            .map_err(|e| fail("certificate", &e))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&pem).map_err(|e| fail("certificate", &e))?;
        let cert = pem.parse_x509().map_err(|e| fail("certificate", &e))?;
        Ok(cert.public_key().subject_public_key.data.to_vec())
    }
}
