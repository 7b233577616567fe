//! TLS on every hop, with rustls (and ring) throughout: the gRPC server's
//! own TLS, reloaded when its files change ([`server`]); the connections
//! to push processors over `https://`, with public roots or a processor's
//! own CA and client certificate ([`client`]); and the HTTP client that
//! fetches a JWKS.

pub mod client;
mod conn;
mod handshakes;
pub mod server;

pub use handshakes::{HANDSHAKE_TIMEOUT, max_handshakes};

use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;

/// The crypto every TLS configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider, for the libraries
/// (tonic's TLS, reqwest) that ask rustls for the default. Idempotent.
pub fn install_default_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another provider installed first (by a library) is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The trust anchors of the public web (Mozilla's, through webpki-roots).
pub fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// An HTTP client that verifies servers against the public roots and
/// follows no redirect (an `https://` URL's answer cannot send it to
/// plaintext, or elsewhere).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(public_roots())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}
