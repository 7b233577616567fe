//! HTTP clients to processors (webhooks, OpenDSR, OpenDSR's key fetches),
//! kept per set of TLS files (one connection pool per processor's trust
//! settings) and built again when the files change. Each resolves names
//! through the lookup (see [`super::lookup`]), kept to loopback for a
//! plaintext URL where plaintext may not go further; a URL that no
//! registration checked is checked by the same rules before it is
//! fetched ([`HttpClients::may_fetch`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::adapter::{DeliveryError, local};
use super::lookup::Lookup;
use crate::domain::ProcessorTls;
use crate::tls::client::{Freshness, webhook_client};

/// HTTP clients kept per set of TLS files, built again when the files
/// change; each connection goes only where the lookup allows (see
/// [`super::lookup`]).
pub(super) struct HttpClients {
    /// By TLS files, and whether the client is kept to loopback (see
    /// [`Lookup::for_url`]).
    kept: Mutex<HashMap<(Option<ProcessorTls>, bool), Kept>>,
    lookup: Lookup,
}

struct Kept {
    client: reqwest::Client,
    files: Freshness,
}

impl HttpClients {
    /// Clients whose connections resolve names through `lookup`.
    pub(super) fn new(lookup: Lookup) -> Self {
        Self {
            kept: Mutex::default(),
            lookup,
        }
    }

    /// Whether `url`, a URL no registration checked (the certificate a
    /// processor's discovery document names), may be fetched: `https://`,
    /// or `http://` kept to loopback unless plaintext may go further, to a
    /// host that is not, and does not resolve only to, an address no
    /// delivery may go to. An address written in the URL is checked here:
    /// a connection looks up names only.
    pub(super) async fn may_fetch(&self, url: &str) -> Result<(), String> {
        let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
        let port = match uri.scheme_str() {
            Some("https") => 443,
            Some("http") => 80,
            _ => return Err("not an http:// or https:// URL".to_string()),
        };
        let host = uri
            .host()
            .ok_or_else(|| "a URL without a host".to_string())?;
        self.lookup
            .for_url(url)
            .allowed(host, uri.port_u16().unwrap_or(port))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The client for `url` with `tls`.
    pub(super) fn get(
        &self,
        url: &str,
        tls: Option<&ProcessorTls>,
    ) -> Result<reqwest::Client, DeliveryError> {
        let lookup = self.lookup.for_url(url);
        let mut clients = self.kept.lock().expect("client cache lock");
        let key = (tls.cloned(), lookup.loopback_only());
        if let Some(kept) = clients.get_mut(&key)
            && kept.files.still_current(tls)
        {
            return Ok(kept.client.clone());
        }
        // Files that cannot be read may be a mount in progress: retried.
        let (client, digest) = webhook_client(tls, Arc::new(lookup))
            .map_err(|m| DeliveryError::retryable(local::TLS_FILES, m))?;
        clients.insert(
            key,
            Kept {
                client: client.clone(),
                files: Freshness::new(tls, digest),
            },
        );
        Ok(client)
    }
}
