//! The server's TLS (`--tls-cert`, `--tls-key`): the gRPC port's, with
//! mutual TLS when `--tls-client-ca` names the CA whose client
//! certificates are accepted (then every connection must present one), and
//! the admin port's with `--admin-tls` (the same files, no client
//! certificate, HTTP/1.1).
//!
//! Operators rotate certificates by replacing the files (a Kubernetes
//! Secret update does that), so the files are read again every
//! `--reload-interval` and, when their bytes changed, a new
//! configuration serves every new connection from then on; connections
//! already open keep theirs and are not dropped. A broken new set (a key
//! that does not match, a file half-written) is logged and the running
//! configuration kept.
//!
//! Handshakes happen off the accept loop, each bounded in time, and a
//! bounded number at once, a new connection ending the oldest
//! (`super::handshakes`), so slow or silent clients cannot hold up the
//! others. Each connection carries its
//! peer's certificate chain ([`TlsConnectInfo`]) to the calls made on it,
//! for the principals of client certificates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use super::conn::{TlsConn, TlsConnectInfo};

use super::handshakes::{HANDSHAKE_TIMEOUT, Handshakes, max_handshakes};

/// How long an accept loop (a TLS listener's, or the plaintext admin
/// listener's) waits after an error accepting a connection, rather than
/// spinning on an error that lasts (no file descriptor left).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The files of the server's TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA of client certificates (PEM); `None`: no client certificate.
    pub client_ca: Option<PathBuf>,
}

/// What a listener serves, which decides the protocols its TLS offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Served {
    /// gRPC over HTTP/2, and the HTTP callback API over either version.
    Api,
    /// The admin endpoints, over HTTP/1.1.
    Admin,
}

/// The server's TLS configuration, replaced when its files change.
pub struct ServerTls {
    files: TlsFiles,
    served: Served,
    current: RwLock<Arc<ServerConfig>>,
    /// Digest of the files the current configuration was built from.
    digest: Mutex<Vec<u8>>,
    /// Most handshakes under way at once.
    max_handshakes: usize,
}

impl ServerTls {
    /// Reads the files and builds the configuration; fails with a message
    /// naming the file at fault.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        Self::load_for(files, Served::Api)
    }

    /// The admin listener's TLS (`--admin-tls`): the same certificate,
    /// HTTP/1.1, and no client certificate asked for, since Kubernetes
    /// probes present none.
    pub fn load_admin(files: TlsFiles) -> anyhow::Result<Self> {
        let files = TlsFiles {
            client_ca: None,
            ..files
        };
        Self::load_for(files, Served::Admin)
    }

    fn load_for(files: TlsFiles, served: Served) -> anyhow::Result<Self> {
        let (config, digest) = build(&files, served)?;
        Ok(Self {
            files,
            served,
            current: RwLock::new(Arc::new(config)),
            digest: Mutex::new(digest),
            max_handshakes: max_handshakes(),
        })
    }

    /// The same, with at most `most` handshakes under way at once
    /// instead of [`max_handshakes`].
    pub fn with_max_handshakes(self, most: usize) -> Self {
        Self {
            max_handshakes: most,
            ..self
        }
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again and, when they changed, serves new
    /// connections with them. Returns whether the configuration changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let digest = digest(&self.files)?;
        if *self.digest.lock().expect("tls digest lock") == digest {
            return Ok(false);
        }
        let (config, digest) = build(&self.files, self.served)?;
        *self.current.write().expect("tls config lock") = Arc::new(config);
        *self.digest.lock().expect("tls digest lock") = digest;
        Ok(true)
    }

    /// Reloads every `every` until `stop`, logging what it does.
    pub async fn reloader(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let listener = match self.served {
                Served::Api => "gRPC",
                Served::Admin => "admin",
            };
            match self.reload() {
                Ok(true) => {
                    tracing::info!(
                        listener,
                        "TLS certificate files changed; new connections use them"
                    )
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(listener, error = %format!("{e:#}"), "cannot reload the TLS files; keeping the ones in use")
                }
            }
        }
    }

    /// Accepts connections on `listener` and hands out those whose
    /// handshake succeeded, until `stop`; a bounded number under way, each
    /// until its connection is handed over (see `super::handshakes`). After an error accepting (no file
    /// descriptor left, say) it waits [`ACCEPT_PAUSE`] before the next.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> ReceiverStream<std::io::Result<TlsConn>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut handshakes = Handshakes::default();
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot accept a connection");
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                            }
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(
                    self.current.read().expect("tls config lock").clone(),
                );
                let tx = tx.clone();
                let handshake = handshakes.start(self.max_handshakes);
                tokio::spawn(async move {
                    // Counted until handed over: a server that takes no
                    // connection for a while (an admin listener whose
                    // connections all have requests in progress) leaves
                    // them waiting within the bound.
                    let handed = async {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(TlsConn::new(stream, remote))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                        }
                    };
                    tokio::select! {
                        _ = handed => {}
                        _ = handshake.ended.cancelled() => {
                            tracing::debug!(%remote, "TLS handshake ended for a newer connection");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Digest of the files' bytes.
fn digest(files: &TlsFiles) -> anyhow::Result<Vec<u8>> {
    let mut hash = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        hash.update(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        hash.update([0]);
    }
    Ok(hash.finalize().to_vec())
}

/// The configuration the files describe, and their digest.
fn build(files: &TlsFiles, served: Served) -> anyhow::Result<(ServerConfig, Vec<u8>)> {
    super::install_default_provider();
    let digest = digest(files)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no PEM certificates", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("{} is not PEM", ca.display()))?)
                    .with_context(|| {
                        format!("{} holds an unusable CA certificate", ca.display())
                    })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider())
                    .build()
                    .with_context(|| {
                        format!("{} cannot verify client certificates", ca.display())
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{} does not match {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = match served {
        Served::Api => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Served::Admin => vec![b"http/1.1".to_vec()],
    };
    Ok((config, digest))
}

/// What a client certificate says about its holder: its names, for
/// mapping it to a principal, and when it stops being valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateFacts {
    /// The subject's common name.
    pub common_name: Option<String>,
    /// The DNS and URI subject alternative names.
    pub sans: Vec<String>,
    /// `notAfter`, Unix seconds (`None` if the certificate does not parse).
    pub not_after: Option<i64>,
}

/// The [`CertificateFacts`] of a certificate: none if it does not parse.
pub fn certificate_facts(der: &CertificateDer<'_>) -> CertificateFacts {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return CertificateFacts::default();
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::URI(s) => Some(s.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    CertificateFacts {
        common_name,
        sans,
        not_after: Some(cert.validity().not_after.timestamp()),
    }
}
