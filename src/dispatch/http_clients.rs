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
use super::destination::check_address;
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

    /// `url`, a URL no registration checked (the certificate a processor's
    /// discovery document names), as it may be fetched: parsed as the
    /// client parses it (a scheme in capitals, an address written as one
    /// number, become what they are), without user information, and held
    /// to the rules of a registered endpoint (see [`super::destination`]).
    /// Fetch the URL returned: the one checked.
    pub(super) async fn may_fetch(&self, url: &str) -> Result<String, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("not an http:// or https:// URL".to_string());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not hold user information (user:password@)".to_string());
        }
        let url = parsed.to_string();
        check_address(&url, "processor_certificate", &self.lookup)
            .await
            .map_err(|v| v.to_string())?;
        Ok(url)
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::dispatch::lookup::{Resolved, Resolver};

    /// Every name at loopback.
    struct Loopback;

    impl Resolver for Loopback {
        fn resolve(&self, _: &str, port: u16) -> Resolved {
            Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
        }
    }

    /// A URL no registration checked is checked as the client reads it:
    /// an address written as one number or in hexadecimal is that
    /// address, a scheme in capitals is that scheme.
    #[tokio::test]
    async fn a_url_is_checked_as_the_client_reads_it() {
        let clients = HttpClients::new(Lookup::new(Loopback, false));
        for refused in [
            "http://2852039166/cert.pem",
            "http://0xA9FEA9FE/cert.pem",
            "http://[::ffff:169.254.169.254]/cert.pem",
            "HTTP://192.0.2.1/cert.pem",
            "http://user:secret@127.0.0.1/cert.pem",
            "ftp://127.0.0.1/cert.pem",
            "not a url",
        ] {
            assert!(clients.may_fetch(refused).await.is_err(), "{refused}");
        }
        assert_eq!(
            clients.may_fetch("HTTP://localhost:8080/cert.pem").await,
            Ok("http://localhost:8080/cert.pem".to_string())
        );
    }
}
