//! TLS towards push processors: an `https://` endpoint is reached over
//! TLS, verified against the public roots or, when the processor names
//! one, against its own CA alone; a client certificate and key, when
//! named, are presented for mutual TLS. There is no fallback to plaintext:
//! a handshake that fails fails the delivery (retried like any
//! unreachable processor), and no identity is sent.
//!
//! The files are named in the processor's settings and read here; a
//! channel built from them is kept, and built again when the files'
//! contents change (a certificate rotated), as checked at most every
//! [`RECHECK`].

use std::time::Duration;

use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::domain::ProcessorTls;

/// How often the files behind a kept channel are checked for changes.
pub const RECHECK: Duration = Duration::from_secs(10);

/// The TLS configuration of a processor's channel, and a digest of the
/// files it was read from; a message naming the file at fault otherwise.
pub fn processor_tls(tls: Option<&ProcessorTls>) -> Result<(ClientTlsConfig, Vec<u8>), String> {
    super::install_default_provider();
    let mut digest = Sha256::new();
    let mut read = |path: &str| -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        digest.update(&bytes);
        digest.update([0]);
        Ok(bytes)
    };
    let mut config = ClientTlsConfig::new();
    match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca) => config = config.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => config = config.with_webpki_roots(),
    }
    if let Some((cert, key)) = tls.and_then(|t| {
        t.client_cert_file
            .as_deref()
            .zip(t.client_key_file.as_deref())
    }) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok((config, digest.finalize().to_vec()))
}

/// The digest of the files `tls` names, as [`processor_tls`] computes it
/// (to tell whether a kept channel is still current).
pub fn files_digest(tls: Option<&ProcessorTls>) -> Result<Vec<u8>, String> {
    processor_tls(tls).map(|(_, digest)| digest)
}

/// An HTTP client for a webhook processor (see [`processor_tls`] for the
/// files), and the digest of the files it was built from. It follows no
/// redirect: a delivery goes where the processor was registered to take
/// it, never where an answer points (a cloud metadata service, say).
pub fn webhook_client(tls: Option<&ProcessorTls>) -> Result<(reqwest::Client, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut digest = Sha256::new();
    let mut read = |path: &str| -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        digest.update(&bytes);
        digest.update([0]);
        Ok(bytes)
    };
    let roots = match tls.and_then(|t| t.ca_file.as_deref()) {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                let cert = cert.map_err(|e| format!("{ca}: {e}"))?;
                roots.add(cert).map_err(|e| format!("{ca}: {e}"))?;
            }
            roots
        }
        None => super::public_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match tls.and_then(|t| {
        t.client_cert_file
            .as_deref()
            .zip(t.client_key_file.as_deref())
    }) {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{cert}: {e}"))?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| format!("{key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{cert}: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, digest.finalize().to_vec()))
}
