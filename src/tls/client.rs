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

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::domain::ProcessorTls;

/// How often the files behind a kept channel are checked for changes.
pub const RECHECK: Duration = Duration::from_secs(10);

/// A file read: its path (for messages) and its contents.
type File = (String, Vec<u8>);

/// The files a processor's TLS names, read, with the digest of their
/// contents (to tell later whether they changed).
struct Files {
    /// Its CA (path, PEM), trusted instead of the public roots.
    ca: Option<File>,
    /// Our client certificate and key (paths, PEM).
    identity: Option<(File, File)>,
    digest: Vec<u8>,
}

/// Reads the files `tls` names; a message naming the file at fault.
fn read_files(tls: Option<&ProcessorTls>) -> Result<Files, String> {
    let mut digest = Sha256::new();
    let mut read = |path: &str| -> Result<File, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        digest.update(&bytes);
        digest.update([0]);
        Ok((path.to_string(), bytes))
    };
    let ca = tls
        .and_then(|t| t.ca_file.as_deref())
        .map(&mut read)
        .transpose()?;
    let identity = match tls.and_then(|t| {
        t.client_cert_file
            .as_deref()
            .zip(t.client_key_file.as_deref())
    }) {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };
    Ok(Files {
        ca,
        identity,
        digest: digest.finalize().to_vec(),
    })
}

/// The TLS configuration of a processor's channel, and a digest of the
/// files it was read from; a message naming the file at fault otherwise.
pub fn processor_tls(tls: Option<&ProcessorTls>) -> Result<(ClientTlsConfig, Vec<u8>), String> {
    super::install_default_provider();
    let files = read_files(tls)?;
    let mut config = ClientTlsConfig::new();
    match files.ca {
        Some((_, pem)) => config = config.ca_certificate(Certificate::from_pem(pem)),
        None => config = config.with_webpki_roots(),
    }
    if let Some(((_, cert), (_, key))) = files.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok((config, files.digest))
}

/// The digest of the files `tls` names, as [`processor_tls`] computes it
/// (to tell whether a kept channel is still current).
pub fn files_digest(tls: Option<&ProcessorTls>) -> Result<Vec<u8>, String> {
    read_files(tls).map(|f| f.digest)
}

/// Whether the files behind something built from them (a channel, a
/// client) are unchanged, compared at most every [`RECHECK`].
pub struct Freshness {
    tls: Option<ProcessorTls>,
    digest: Vec<u8>,
    checked: Instant,
}

impl Freshness {
    /// Built now from the files `tls` names, whose digest is `digest`
    /// (empty: nothing to watch, as for plaintext).
    pub fn new(tls: Option<&ProcessorTls>, digest: Vec<u8>) -> Self {
        Self {
            tls: tls.cloned(),
            digest,
            checked: Instant::now(),
        }
    }

    /// Whether it was built from these TLS settings and the files are
    /// still as they were.
    pub fn still_current(&mut self, tls: Option<&ProcessorTls>) -> bool {
        if self.tls.as_ref() != tls {
            return false;
        }
        if self.digest.is_empty() || self.checked.elapsed() < RECHECK {
            return true;
        }
        self.checked = Instant::now();
        files_digest(tls).is_ok_and(|d| d == self.digest)
    }
}

/// An HTTP client for a webhook processor (see [`processor_tls`] for the
/// files) that resolves names with `resolver`, and the digest of the files
/// it was built from. It follows no redirect: a delivery goes where the
/// processor was registered to take it, never where an answer points (a
/// cloud metadata service, say).
pub fn webhook_client(
    tls: Option<&ProcessorTls>,
    resolver: Arc<dyn reqwest::dns::Resolve>,
) -> Result<(reqwest::Client, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let files = read_files(tls)?;
    let roots = match &files.ca {
        Some((path, pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("{path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("{path}: {e}"))?;
            }
            roots
        }
        None => super::public_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match &files.identity {
        Some(((cert_path, cert), (key_path, key))) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{cert_path}: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("{key_path}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{cert_path}: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(resolver)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((client, files.digest))
}
