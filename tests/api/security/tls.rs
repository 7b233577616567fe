//! TLS on every hop. Towards processors: an `https://` processor is
//! reached over TLS and verified; one whose certificate is from another
//! CA, expired, or that wants a client certificate we do not present, or
//! that speaks plaintext, gets no delivery at all: the instruction is
//! retried (and escalates), never delivered in the clear. The server:
//! TLS with its certificate reloaded when the files change, and mutual TLS
//! whose client certificates name principals.

use std::time::Duration;

use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use dsr_orchestrator::tls::HANDSHAKE_TIMEOUT;
use tokio::io::AsyncReadExt;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::backends;
use crate::harness::app::{Bearer, Clients, tls_channel};
use crate::harness::pki::{Ca, Issued};
use crate::harness::*;

backends!(
    deliveries_reach_only_processors_whose_tls_verifies,
    the_server_serves_tls_and_reloads_its_certificate,
    silent_connections_give_way_to_a_client_that_shakes_hands,
    client_certificates_name_principals
);

/// A fake processor serving TLS with `cert`, wanting a client
/// certificate from `client_ca` when given.
async fn tls_fake(cert: &Issued, client_ca: Option<&Ca>, reply: Reply) -> FakeProcessor {
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&cert.cert, &cert.key));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(&ca.pem));
    }
    FakeProcessor::start_tls(reply, tls).await
}

/// A push processor at `endpoint` with these TLS files.
fn tls_processor(id: &str, endpoint: &str, tls: pb::ProcessorTls) -> pb::Processor {
    let mut p = push_processor(id, endpoint);
    if let Some(pb::adapter::Kind::Grpc(g)) = p.adapter.as_mut().and_then(|a| a.kind.as_mut()) {
        g.tls = Some(tls);
    }
    p
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

async fn deliveries_reach_only_processors_whose_tls_verifies(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("processors CA");
    let stranger = Ca::new("another CA");
    let clients_ca = Ca::new("our client CA");
    let ca_file = dir.path().join("processors-ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let our_cert =
        clients_ca
            .client("dsr-orchestrator", None)
            .write(dir.path(), "client", &clients_ca);
    let done = Reply::done(pb::Outcome::Completed);

    let trusted = tls_fake(&ca.server(), None, done.clone()).await;
    let foreign = tls_fake(&stranger.server(), None, done.clone()).await;
    let expired = tls_fake(&ca.expired_server(), None, done.clone()).await;
    let mutual = tls_fake(&ca.server(), Some(&clients_ca), done.clone()).await;
    let plaintext = FakeProcessor::start(done.clone()).await;

    let app = TestApp::spawn(&db).await;
    let with_ca = |extra: Option<&crate::harness::pki::Files>| pb::ProcessorTls {
        ca_file: path(&ca_file),
        client_cert_file: extra.map(|f| path(&f.cert)).unwrap_or_default(),
        client_key_file: extra.map(|f| path(&f.key)).unwrap_or_default(),
    };
    for (id, fake, files) in [
        ("trusted", &trusted, None),
        ("foreign", &foreign, None),
        ("expired", &expired, None),
        ("mutual-without", &mutual, None),
        ("mutual-with", &mutual, Some(&our_cert)),
        ("plaintext", &plaintext, None),
    ] {
        let endpoint = if id == "plaintext" {
            // A plaintext server behind an https:// endpoint.
            format!("https://localhost:{}", fake.addr.port())
        } else {
            fake.tls_endpoint()
        };
        register(&app, tls_processor(id, &endpoint, with_ca(files))).await;
    }
    let req = submit(&app, deletion("tls@example.com")).await;
    let id_of = |p: &str| {
        req.instructions
            .iter()
            .find(|i| i.processor_id == p)
            .unwrap()
            .instruction_id
            .clone()
    };
    for ok in ["trusted", "mutual-with"] {
        wait_for_state(&app, &id_of(ok), pb::InstructionState::Completed).await;
    }
    assert_eq!(trusted.deliveries().len(), 1);
    assert_eq!(
        trusted.deliveries()[0].subject_identities[0].value,
        "tls@example.com"
    );
    assert_eq!(mutual.deliveries().len(), 1, "only with our certificate");
    for refused in ["foreign", "expired", "mutual-without", "plaintext"] {
        // Retried within the budget (four attempts), then escalated:
        // never delivered, never lost.
        let escalated =
            wait_for_state(&app, &id_of(refused), pb::InstructionState::Escalated).await;
        assert_eq!(escalated.attempts, 4, "{refused}");
        let history = all_instructions(&app)
            .await
            .into_iter()
            .find(|i| i.instruction_id == id_of(refused))
            .unwrap()
            .history;
        assert!(
            history.iter().all(|a| a.result == "retryable_error"),
            "{refused}: {history:?}"
        );
    }
    for fake in [&foreign, &expired, &plaintext] {
        assert!(fake.deliveries().is_empty(), "no identity crossed");
    }
    app.stop().await;
}

/// Whether a call failed in the transport (the connection was refused or
/// ended), not with an answer of the server's.
fn in_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status)
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some())
}

/// A client trusting `ca`, with `identity` for mutual TLS.
pub(super) fn client_tls(ca: &Ca, identity: Option<&Issued>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    tls
}

/// Writes `cert` over the server's files.
pub(super) fn install(dir: &std::path::Path, cert: &Issued) {
    // Written aside and renamed in place, as a Secret update swaps them.
    for (name, content) in [("server.crt", &cert.cert), ("server.key", &cert.key)] {
        let aside = dir.join(format!("{name}.new"));
        std::fs::write(&aside, content).unwrap();
        std::fs::rename(&aside, dir.join(name)).unwrap();
    }
}

async fn the_server_serves_tls_and_reloads_its_certificate(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new("first server CA");
    install(dir.path(), &first.server());
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let app = TestApp::spawn_tls(
        &db,
        |c| {
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
            c.reload_interval = Duration::from_millis(50);
        },
        client_tls(&first, None),
    )
    .await;
    assert!(all_requests(&app).await.is_empty(), "served over TLS");
    let plain = Clients::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect_lazy(),
        Bearer::default(),
    );
    let refused = plain
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert!(in_transport(&refused), "no plaintext: {refused:?}");

    let second = Ca::new("second server CA");
    install(dir.path(), &second.server());
    // The server checks its files every 50 ms: wait (bounded) until a new
    // connection presents the new certificate.
    let mut reloaded = None;
    for _ in 0..200 {
        match tls_channel(app.addr, client_tls(&second, None)).await {
            Ok(channel) => {
                reloaded = Some(channel);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    let reloaded = Clients::new(
        reloaded.expect("the new certificate is served"),
        Bearer::default(),
    );
    reloaded
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .expect("a new connection with the new certificate");
    // The connection opened before the rotation keeps working.
    assert!(all_requests(&app).await.is_empty());
    app.stop().await;
}

/// With as many connections open as the server takes handshakes at once
/// (8 here), each sending nothing, a client that shakes hands is served,
/// and the oldest silent connection is closed for it, long before its
/// handshake would have timed out.
async fn silent_connections_give_way_to_a_client_that_shakes_hands(db: TestDb) {
    const MOST: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    install(dir.path(), &ca.server());
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let options = Options {
        max_handshakes: Some(MOST),
        ..Options::default()
    };
    let app = TestApp::spawn_tls_with(
        &db,
        options,
        |c| {
            c.tls_cert = Some(cert.clone());
            c.tls_key = Some(key.clone());
        },
        client_tls(&ca, None),
    )
    .await;
    let mut silent = Vec::with_capacity(MOST);
    for _ in 0..MOST {
        silent.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }

    let client = Clients::new(
        tls_channel(app.addr, client_tls(&ca, None))
            .await
            .expect("the handshake succeeds"),
        Bearer::default(),
    );
    client
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .expect("served");
    let mut byte = [0u8; 1];
    let oldest = tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, silent[0].read(&mut byte))
        .await
        .expect("closed before its handshake would time out");
    assert!(matches!(oldest, Ok(0) | Err(_)), "closed: {oldest:?}");
    drop(silent);
    app.stop().await;
}

/// A server under mutual TLS: its certificate issued by `server_ca`,
/// clients' by `client_ca` (the harness among them), and the auth file's
/// `mapping` (its `client_certificates`) after the harness's token. Keep
/// the directory as long as the server.
pub(super) async fn mtls_app(
    db: &TestDb,
    server_ca: &Ca,
    client_ca: &Ca,
    mapping: &str,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &server_ca.server());
    let client_ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let auth_file = dir.path().join("auth.yaml");
    std::fs::write(&auth_file, crate::harness::app::harness_auth_file(mapping)).unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let harness = client_ca.client("harness-client", None);
    let app = TestApp::spawn_tls(
        db,
        |c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
            c.tls_client_ca = Some(client_ca_file);
            c.auth_file = Some(auth_file);
        },
        client_tls(server_ca, Some(&harness)),
    )
    .await;
    (app, dir)
}

async fn client_certificates_name_principals(db: TestDb) {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let console = client_ca.client("ops-console", Some("spiffe://corp/ns/dsr/sa/console"));
    let stranger = client_ca.client("stranger", None);
    let outsider = Ca::new("not our client CA").client("ops-console", None);
    let (app, _dir) = mtls_app(
        &db,
        &server_ca,
        &client_ca,
        "client_certificates:\n  - san: spiffe://corp/ns/dsr/sa/console\n    principal: ops-console\n    roles: [auditor]\n",
    )
    .await;
    register(&app, pull_processor("puller", 60_000)).await;

    let as_cert = |identity: &Issued| {
        let tls = client_tls(&server_ca, Some(identity));
        let addr = app.addr;
        async move {
            Clients::new(
                tls_channel(addr, tls).await.expect("handshake"),
                Bearer::default(),
            )
        }
    };
    let console_clients = as_cert(&console).await;
    console_clients
        .processors
        .clone()
        .list_processors(pb::ListProcessorsRequest::default())
        .await
        .expect("the certificate's principal is an auditor");
    let denied = console_clients
        .processors
        .clone()
        .disable_processor(pb::DisableProcessorRequest {
            processor_id: "puller".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let unknown = as_cert(&stranger)
        .await
        .processors
        .clone()
        .list_processors(pb::ListProcessorsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
    // Without a certificate of the client CA there is no connection.
    // (Under TLS 1.3 the server refuses the certificate after the
    // client's side of the handshake: the first call fails in transport.)
    for tls in [
        client_tls(&server_ca, None),
        client_tls(&server_ca, Some(&outsider)),
    ] {
        if let Ok(channel) = tls_channel(app.addr, tls).await {
            let refused = Clients::new(channel, Bearer::default())
                .processors
                .clone()
                .list_processors(pb::ListProcessorsRequest::default())
                .await
                .unwrap_err();
            assert!(in_transport(&refused), "{refused:?}");
        }
    }
    app.stop().await;
}
