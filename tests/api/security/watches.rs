//! A watch outlives the call that opened it, not its credential: a
//! `WatchRequest` stream ends with UNAUTHENTICATED once its static token
//! is taken out of the auth file or its JWT expires, and with
//! PERMISSION_DENIED once its principal no longer sees every request,
//! though events would still come; a change that leaves it what it had
//! does not end it. A watch a client certificate opened ends when the
//! certificate expires. A slow reader of a long history is cut off inside
//! it, not after it. A check waiting on a slow JWKS does not hold up a
//! stopping server.

use std::time::Duration;

use dsr_orchestrator::pb;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use super::credentials::{Signer, claims, jwt_app, now, serve_jwks};
use super::tls::{client_tls, mtls_app};
use crate::backends;
use crate::harness::app::{
    Bearer, Clients, HARNESS_TOKEN, harness_auth_file, tls_channel, token_hash,
};
use crate::harness::pki::Ca;
use crate::harness::*;

backends!(
    a_watch_ends_when_its_token_is_taken_out,
    a_watch_ends_when_its_jwt_expires,
    a_watch_ends_when_its_principal_no_longer_sees_every_request,
    a_watch_ends_when_its_client_certificate_expires,
    a_slow_reader_of_a_long_history_is_cut_off_within_it,
    a_watch_waiting_on_a_slow_jwks_does_not_hold_up_shutdown,
    a_stopping_server_does_not_wait_for_a_slow_reader,
);

/// A server that reads its auth file every 50 ms, where `token` is an
/// auditor's.
async fn with_watcher(db: &TestDb, token: &str) -> TestApp {
    TestApp::spawn_authenticated(
        db,
        &format!(
            "  - principal: watcher\n    sha256: {}\n    roles: [auditor]\n",
            token_hash(token)
        ),
        |c| c.reload_interval = Duration::from_millis(50),
    )
    .await
}

/// A manual processor, which keeps the requests submitted to it open.
async fn manual_processor(app: &TestApp) {
    let mut manual = pull_processor("manual", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(app, manual).await;
}

/// Opens, with `token`, a watch of a new request the harness submits
/// (open, with the manual processor), reads its first event, and returns
/// the request's id and the rest of the stream.
async fn watching(app: &TestApp, token: &str) -> (String, tonic::Streaming<pb::RequestEvent>) {
    let submitted = submit(app, deletion("watched@example.com")).await;
    let mut stream = app
        .clients(Bearer::token(token))
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: submitted.request_id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::RequestEventType::Received as i32);
    (submitted.request_id, stream)
}

/// How the stream ends: the status it ends with (OK for a clean end).
async fn end_of(mut stream: tonic::Streaming<pb::RequestEvent>) -> tonic::Status {
    let end = async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => return tonic::Status::ok(""),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), end)
        .await
        .expect("the watch ends")
}

async fn a_watch_ends_when_its_token_is_taken_out(db: TestDb) {
    let revocable = "a-watching-token-about-to-be-revoked";
    let app = with_watcher(&db, revocable).await;
    manual_processor(&app).await;
    let (_, stream) = watching(&app, revocable).await;
    std::fs::write(app.auth_file(), harness_auth_file("")).unwrap();
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert_eq!(end.message(), "unknown token");
    app.stop().await;
}

async fn a_watch_ends_when_its_jwt_expires(db: TestDb) {
    let signer = Signer::new("k1");
    let (app, _jwks) = jwt_app(&db, &signer).await;
    manual_processor(&app).await;
    // Valid for four seconds (and the second of leeway).
    let mut short = claims("portal-jwt", &["auditor"]);
    short["exp"] = (now() + 4).into();
    let (_, stream) = watching(&app, &signer.sign("k1", short)).await;
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert_eq!(end.message(), "the JWT has expired");
    app.stop().await;
}

async fn a_watch_ends_when_its_principal_no_longer_sees_every_request(db: TestDb) {
    let watcher = "a-watching-auditors-token";
    let probe = "a-token-that-shows-the-file-was-read";
    let entry = |roles: &str| {
        format!(
            "  - principal: watcher\n    sha256: {}\n    roles: [{roles}]\n",
            token_hash(watcher)
        )
    };
    let app = TestApp::spawn_authenticated(&db, &entry("auditor"), |c| {
        c.reload_interval = Duration::from_millis(50)
    })
    .await;
    manual_processor(&app).await;
    let (request_id, mut stream) = watching(&app, watcher).await;

    // More roles, still seeing every request: the watch goes on. The
    // probe's token works once the server has read the file.
    write_with_probe(&app, &entry("auditor, operator"), probe).await;
    app.requests
        .clone()
        .confirm_receipt(pb::ConfirmReceiptRequest {
            request_id: request_id.clone(),
        })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event")
        .expect("the stream goes on")
        .expect("an event, not an end");
    assert_eq!(next.r#type, pb::RequestEventType::ReceiptConfirmed as i32);

    // Only a submitter now: another's request is no longer its to watch.
    std::fs::write(app.auth_file(), harness_auth_file(&entry("submitter"))).unwrap();
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    app.stop().await;
}

async fn a_watch_ends_when_its_client_certificate_expires(db: TestDb) {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let mapping = "client_certificates:\n  - common_name: short-lived\n    \
                   principal: short-lived\n    roles: [auditor]\n";
    let (app, _dir) = mtls_app(&db, &server_ca, &client_ca, mapping).await;
    manual_processor(&app).await;
    let submitted = submit(&app, deletion("watched@example.com")).await;

    // Valid at the handshake, for four more seconds.
    let short = client_ca.client_until("short-lived", now() + 4);
    let channel = tls_channel(app.addr, client_tls(&server_ca, Some(&short)))
        .await
        .expect("handshake");
    let as_certificate = Clients::new(channel.clone(), Bearer::default());
    let mut stream = as_certificate
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: submitted.request_id,
            after_sequence: 0,
        })
        .await
        .expect("the certificate's principal is an auditor")
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::RequestEventType::Received as i32);
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    let expired = "the client certificate has expired: connect again with a valid one";
    assert_eq!(end.message(), expired);
    // The connection outlives the certificate, but takes no other call on
    // it; a token on the same connection is the credential instead.
    let refused = as_certificate
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::Unauthenticated, expired)
    );
    Clients::new(channel, Bearer::token(HARNESS_TOKEN))
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .expect("the token, not the certificate, proves the caller");
    app.stop().await;
}

/// A watch of a long history, read slowly, is held inside one batch of
/// events (the stream's buffers fill and the server waits on the reader),
/// and its credential is asked again there too: a token taken out part-way
/// ends it, instead of the rest of the batch still going to the reader.
async fn a_slow_reader_of_a_long_history_is_cut_off_within_it(db: TestDb) {
    let revocable = "a-slow-watchers-token";
    let probe = "a-token-that-shows-the-file-was-read";
    let app = with_watcher(&db, revocable).await;
    let mut stream = watching_a_long_history(&app, revocable).await;
    write_with_probe(&app, "", probe).await;
    let (received, end) = read_to_the_end(&mut stream).await;
    assert_eq!(
        end.code(),
        Code::Unauthenticated,
        "{end:?} after {received}"
    );
    assert!(
        received < LONG_HISTORY,
        "{received} of {LONG_HISTORY} events went out"
    );
    app.stop().await;
}

/// A stopping server does not wait for a watch's slow reader: the reader's
/// stream ends at once, ahead of the events still queued for it, telling it
/// to resume, and the server stops.
async fn a_stopping_server_does_not_wait_for_a_slow_reader(db: TestDb) {
    let watcher = "a-slow-watchers-token";
    let app = with_watcher(&db, watcher).await;
    let mut stream = watching_a_long_history(&app, watcher).await;
    let shutdown = app.shutdown_token();
    let stopped = tokio::spawn(app.stop());
    shutdown.cancelled().await;
    let (received, end) = read_to_the_end(&mut stream).await;
    assert_eq!(
        (end.code(), end.message()),
        (
            Code::Unavailable,
            "server shutting down; resume with after_sequence"
        ),
        "after {received}"
    );
    assert!(
        received < LONG_HISTORY,
        "{received} of {LONG_HISTORY} events went out"
    );
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the server stops")
        .unwrap();
}

/// Events in [`watching_a_long_history`]'s history: more than the
/// stream's buffers hold (64 in the server's channel, and what fits in one
/// HTTP/2 write), within one batch of the server's reads (500).
const LONG_HISTORY: usize = 450;

/// A watch, with `token`, of a finished access request's history after its
/// end: [`LONG_HISTORY`] fetches of its report, each an event. The watch
/// is on a connection whose flow-control windows hold only a few events,
/// so most wait on the server until the reader takes them; its first event
/// is read.
async fn watching_a_long_history(app: &TestApp, token: &str) -> tonic::Streaming<pb::RequestEvent> {
    let puller = register(app, pull_processor("puller", 60_000)).await;
    let asked = access("long-history@example.com", pb::AccessScope::Categories);
    let submitted = submit(app, asked).await;
    let pulled = pull(app, &puller, 1).await;
    app.instructions
        .clone()
        .complete_instruction(authed(
            &puller,
            pb::CompleteInstructionRequest {
                instruction_id: pulled[0].instruction_id.clone(),
                result: result(pb::Outcome::NoData),
            },
        ))
        .await
        .unwrap();
    let closed = watch_to_end(&app.requests, &submitted.request_id).await;
    for _ in 0..LONG_HISTORY {
        let mut report = app
            .requests
            .clone()
            .get_access_report(pb::GetAccessReportRequest {
                request_id: submitted.request_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        while report.next().await.transpose().unwrap().is_some() {}
    }
    let narrow = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(1024)
        .initial_connection_window_size(1024)
        .connect()
        .await
        .unwrap();
    let mut stream = Clients::new(narrow, Bearer::token(token))
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: submitted.request_id.clone(),
            after_sequence: closed.last().unwrap().sequence,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::RequestEventType::DataFetched as i32);
    stream
}

/// Reads `stream` (whose first event was read) to its end: how many
/// events it gave in all, and the status it ended with.
async fn read_to_the_end(
    stream: &mut tonic::Streaming<pb::RequestEvent>,
) -> (usize, tonic::Status) {
    let mut received = 1;
    let end = async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(status)) => return status,
                None => return tonic::Status::ok(""),
            }
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(30), end)
        .await
        .expect("the watch ends");
    (received, end)
}

/// Writes the auth file with `entries` and an auditor whose token is
/// `probe`, and returns once the server has read it (the probe's token
/// works).
async fn write_with_probe(app: &TestApp, entries: &str, probe: &str) {
    let file = format!(
        "{entries}  - principal: probe\n    sha256: {}\n    roles: [auditor]\n",
        token_hash(probe)
    );
    std::fs::write(app.auth_file(), harness_auth_file(&file)).unwrap();
    let reads = async {
        while list_requests_as(app, probe).await.is_err() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), reads)
        .await
        .expect("the server reads the file again");
}

/// A watch whose JWT is checked again while the JWKS provider is slow to
/// answer does not hold a stopping server up for the fetch: it ends at
/// once, telling the client the server is shutting down.
async fn a_watch_waiting_on_a_slow_jwks_does_not_hold_up_shutdown(db: TestDb) {
    let signer = Signer::new("k1");
    let holding = serve_jwks(std::sync::Arc::new(std::sync::Mutex::new(
        serde_json::json!({ "keys": [signer.jwk] }),
    )))
    .await;
    let (slow, fetches) = slow_jwks().await;
    let jwt = |url: &str| {
        format!(
            "jwt:\n  jwks_url: {url}\n  issuer: https://idp.test\n  \
             audience: dsr-orchestrator\n  refetch: 0s\n"
        )
    };
    let app = TestApp::spawn_authenticated(&db, &jwt(&holding), |c| {
        c.reload_interval = Duration::from_millis(50)
    })
    .await;
    manual_processor(&app).await;
    let token = signer.sign("k1", claims("portal-jwt", &["auditor"]));
    let (_, stream) = watching(&app, &token).await;
    // The server reads the slow provider's set (no keys) when it reads
    // the file; the watch's next check asks it again for k1, and waits.
    std::fs::write(app.auth_file(), harness_auth_file(&jwt(&slow))).unwrap();
    let mut seen = fetches.subscribe();
    tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|n| *n >= 2))
        .await
        .expect("the watch asks the provider again")
        .unwrap();
    app.stop().await;
    let end = end_of(stream).await;
    assert_eq!(
        (end.code(), end.message()),
        (
            Code::Unavailable,
            "server shutting down; resume with after_sequence"
        ),
        "{end:?}"
    );
}

/// A JWKS provider that answers its first fetch with no keys and never
/// answers another; and the count of fetches it was asked.
async fn slow_jwks() -> (String, tokio::sync::watch::Sender<usize>) {
    let fetches = tokio::sync::watch::Sender::new(0usize);
    let counted = fetches.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let counted = counted.clone();
            async move {
                counted.send_modify(|n| *n += 1);
                if *counted.borrow() > 1 {
                    std::future::pending::<()>().await;
                }
                serde_json::json!({ "keys": [] }).to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jwks.json"), fetches)
}

/// Whether `ListRequests` with `token` is let through.
async fn list_requests_as(app: &TestApp, token: &str) -> Result<(), tonic::Status> {
    app.clients(Bearer::token(token))
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .map(drop)
}
