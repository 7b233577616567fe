//! A watch outlives the call that opened it, not its credential: a
//! `WatchRequest` stream ends with UNAUTHENTICATED once its static token
//! is taken out of the auth file or its JWT expires, though events would
//! still come.

use std::time::Duration;

use dsr_orchestrator::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use super::credentials::{Signer, claims, now};
use crate::backends;
use crate::harness::app::{Bearer, harness_auth_file, token_hash};
use crate::harness::*;

backends!(
    a_watch_ends_when_its_token_is_taken_out,
    a_watch_ends_when_its_jwt_expires
);

/// Opens a watch of a new request submitted with `token` (a manual
/// processor keeps it open), reads its first event, and returns the rest
/// of the stream.
async fn watching(app: &TestApp, token: &str) -> tonic::Streaming<pb::RequestEvent> {
    let mut manual = pull_processor("manual", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(app, manual).await;
    let clients = app.clients(Bearer::token(token));
    let submitted = clients
        .requests
        .clone()
        .submit_request(deletion("watched@example.com"))
        .await
        .unwrap()
        .into_inner();
    let mut stream = clients
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: submitted.request_id,
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::RequestEventType::Received as i32);
    stream
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
    let app = TestApp::spawn_authenticated(
        &db,
        &format!(
            "  - principal: watcher\n    sha256: {}\n    roles: [submitter]\n",
            token_hash(revocable)
        ),
        |c| c.reload_interval = Duration::from_millis(50),
    )
    .await;
    let stream = watching(&app, revocable).await;
    std::fs::write(app.auth_file(), harness_auth_file("")).unwrap();
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert_eq!(end.message(), "unknown token");
    app.stop().await;
}

async fn a_watch_ends_when_its_jwt_expires(db: TestDb) {
    let signer = Signer::new("k1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({ "keys": [signer.jwk] }).to_string(),
    )
    .unwrap();
    let app = TestApp::spawn_authenticated(
        &db,
        &format!(
            "jwt:\n  jwks_file: {}\n  issuer: https://idp.test\n  audience: dsr-orchestrator\n  leeway: 1s\n",
            jwks.display()
        ),
        |_| {},
    )
    .await;
    // Valid for two seconds (and the second of leeway).
    let mut short = claims("portal-jwt", &["submitter"]);
    short["exp"] = (now() + 2).into();
    let stream = watching(&app, &signer.sign("k1", short)).await;
    let end = end_of(stream).await;
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert_eq!(end.message(), "the JWT has expired");
    app.stop().await;
}
