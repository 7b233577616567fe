//! The admin listener on a network: over TLS with the gRPC port's
//! certificate (`--admin-tls`), and `/metrics` only for a scraper with the
//! bearer token of `--metrics-token-file`. A plaintext client gets no
//! answer; a missing or wrong token gets 401; the probes need no token; a
//! replaced token file and a renewed certificate take effect without a
//! restart; a token file that cannot serve, or TLS without a certificate,
//! stops the start.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dsr_orchestrator::startup::{Application, Options};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::tls::{client_tls, install};
use crate::backends;
use crate::harness::app::{http_get, test_config};
use crate::harness::pki::Ca;
use crate::harness::*;

backends!(
    the_admin_listener_serves_tls_and_the_metrics_need_the_token,
    an_admin_listener_that_cannot_serve_as_asked_stops_the_start
);

/// `GET path` on the admin listener over TLS, trusting `ca`: `None` when
/// the handshake fails or no HTTP answer comes back.
async fn get_tls(
    addr: SocketAddr,
    ca: &Ca,
    path: &str,
    bearer: Option<&str>,
) -> Option<(u16, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Offered as a browser would: the listener serves HTTP/1.1 only.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    http_get(stream, "localhost", path, bearer).await
}

/// Replaces the token file as a Secret update does: written aside, renamed.
fn write_token(path: &Path, token: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, format!("{token}\n")).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

async fn the_admin_listener_serves_tls_and_the_metrics_need_the_token(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new("first server CA");
    install(dir.path(), &first.server());
    let token_file = dir.path().join("metrics-token");
    write_token(&token_file, "first-scrape-token");
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    // Mutual TLS on the gRPC port; the admin port asks for no certificate.
    let clients = Ca::new("client CA");
    let client_ca = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca, &clients.pem).unwrap();
    let harness = clients.client("harness-client", None);
    let app = TestApp::spawn_tls(
        &db,
        |c| {
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
            c.tls_client_ca = Some(client_ca.clone());
            c.admin_tls = true;
            c.metrics_token_file = Some(token_file.clone());
            c.reload_interval = Duration::from_millis(50);
        },
        client_tls(&first, Some(&harness)),
    )
    .await;
    let admin = app.admin;

    // The probes answer over TLS without a token.
    assert_eq!(
        get_tls(admin, &first, "/healthz", None).await,
        Some((200, "ok\n".into()))
    );
    assert_eq!(
        get_tls(admin, &first, "/readyz", None).await.map(|r| r.0),
        Some(200)
    );
    // The metrics need the token, and nothing of them leaks without it.
    for bearer in [None, Some("a-guess"), Some("first-scrape-token-and-more")] {
        let (status, body) = get_tls(admin, &first, "/metrics", bearer)
            .await
            .expect("an answer");
        assert_eq!(status, 401, "{bearer:?}");
        assert!(body.contains("--metrics-token-file"), "{body}");
        assert!(!body.contains("dsr_"), "{body}");
    }
    let (status, body) = get_tls(admin, &first, "/metrics", Some("first-scrape-token"))
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    assert!(body.contains("dsr_build_info"), "{body}");

    // A plaintext client gets no HTTP answer.
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    assert_eq!(
        http_get(tcp, &admin.to_string(), "/healthz", None).await,
        None
    );

    // A replaced token counts from the next scrape; the old one no longer.
    write_token(&token_file, "second-scrape-token");
    let old = get_tls(admin, &first, "/metrics", Some("first-scrape-token")).await;
    assert_eq!(old.map(|r| r.0), Some(401));
    let new = get_tls(admin, &first, "/metrics", Some("second-scrape-token")).await;
    assert_eq!(new.map(|r| r.0), Some(200));

    // A token file that went missing refuses every scrape rather than
    // serving them unguarded; the probes still answer.
    std::fs::remove_file(&token_file).unwrap();
    let gone = get_tls(admin, &first, "/metrics", Some("second-scrape-token")).await;
    assert_eq!(gone.map(|r| r.0), Some(503));
    let probe = get_tls(admin, &first, "/readyz", None).await;
    assert_eq!(probe.map(|r| r.0), Some(200));
    write_token(&token_file, "third-scrape-token");

    // A renewed certificate is served to new connections: the server
    // checks its files every 50 ms, so wait (bounded) until it is.
    let second = Ca::new("second server CA");
    install(dir.path(), &second.server());
    let mut renewed = None;
    for _ in 0..200 {
        renewed = get_tls(admin, &second, "/metrics", Some("third-scrape-token")).await;
        if renewed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(renewed.map(|r| r.0), Some(200), "the renewed certificate");
    assert_eq!(get_tls(admin, &first, "/healthz", None).await, None);
    app.stop().await;
}

async fn an_admin_listener_that_cannot_serve_as_asked_stops_the_start(db: TestDb) {
    // TLS on the admin port is the gRPC port's certificate: without one
    // there is nothing to serve it with. (`DSR_ADMIN_TLS=false`, as the
    // chart renders it, asks for nothing.)
    let mut config = test_config(&db);
    config.admin_tls = true;
    let refused = Application::build(&config, Options::default())
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .expect("refused");
    assert!(
        refused.contains("--admin-tls needs --tls-cert and --tls-key"),
        "{refused}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let blank = dir.path().join("blank-token");
    std::fs::write(&blank, "  \n").unwrap();
    let two_words = dir.path().join("two-words");
    std::fs::write(&two_words, "first second\n").unwrap();
    for (file, says) in [
        (&missing, "cannot read"),
        (&blank, "must hold one token"),
        (&two_words, "must hold one token"),
    ] {
        let mut config = test_config(&db);
        config.metrics_token_file = Some(file.clone());
        let refused = Application::build(&config, Options::default())
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .expect("refused");
        assert!(refused.contains("--metrics-token-file"), "{refused}");
        assert!(refused.contains(says), "{refused}");
        assert!(refused.contains(&file.display().to_string()), "{refused}");
    }
}
