//! How callers prove who they are, and what follows from it: JWTs checked
//! against a JWKS (expiry, audience, key id, signature), static tokens
//! revoked by taking them out of the auth file, submitters confined to
//! their own requests, and every change recorded with its actor.

use std::time::Duration;

use base64::Engine;
use dsr_orchestrator::auth::Role;
use dsr_orchestrator::pb;
use tonic::Code;

use super::{OTHER_SUBMITTER, principals_per_role, role_token};
use crate::backends;
use crate::harness::app::{Bearer, Clients, harness_auth_file, token_hash};
use crate::harness::*;

backends!(
    jwts_are_checked_against_the_jwks,
    a_jwks_url_is_fetched_again_for_a_key_it_did_not_hold,
    a_static_token_taken_out_of_the_auth_file_is_refused,
    submitters_see_only_their_own_requests,
    every_change_records_who_made_it
);

/// A signing key, and its public half as a JWKS entry.
pub(super) struct Signer {
    key: jsonwebtoken::EncodingKey,
    pub(super) jwk: serde_json::Value,
}

impl Signer {
    pub(super) fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Self {
            key: jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }),
        }
    }

    /// A token with `claims`, naming key `kid`.
    pub(super) fn sign(&self, kid: &str, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A valid token's claims for `sub` with `roles`.
pub(super) fn claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "roles": roles, "iss": "https://idp.test", "aud": "dsr-orchestrator",
        "exp": now() + 600, "nbf": now() - 5,
    })
}

/// The status of a `ListRequests` made with `token`.
async fn list_as(app: &TestApp, token: &str) -> Result<Vec<pb::DataSubjectRequest>, tonic::Status> {
    app.clients(Bearer::token(token))
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .map(|r| r.into_inner().requests)
}

/// A server taking JWTs signed by `signer` (issuer `https://idp.test`,
/// audience `dsr-orchestrator`, a second of leeway), its JWKS in the
/// returned directory (keep it as long as the server).
pub(super) async fn jwt_app(db: &TestDb, signer: &Signer) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({ "keys": [signer.jwk] }).to_string(),
    )
    .unwrap();
    let app = TestApp::spawn_authenticated(
        db,
        &format!(
            "jwt:\n  jwks_file: {}\n  issuer: https://idp.test\n  audience: dsr-orchestrator\n  leeway: 1s\n",
            jwks.display()
        ),
        |_| {},
    )
    .await;
    (app, dir)
}

async fn jwts_are_checked_against_the_jwks(db: TestDb) {
    let signer = Signer::new("k1");
    let (app, _jwks) = jwt_app(&db, &signer).await;

    let valid = signer.sign("k1", claims("portal-jwt", &["auditor"]));
    assert!(
        list_as(&app, &valid).await.is_ok(),
        "a valid token is taken"
    );
    let submitter_only = signer.sign("k1", claims("portal-jwt", &["submitter", "nonsense"]));
    let submitted = app
        .clients(Bearer::token(&submitter_only))
        .requests
        .clone()
        .submit_request(deletion("jwt@example.com"))
        .await
        .expect("roles come from the roles claim")
        .into_inner();
    assert_eq!(
        submitted.submitted_by, "portal-jwt",
        "the principal is the sub claim"
    );
    let no_role = signer.sign("k1", claims("portal-jwt", &["submitter"]));
    assert_eq!(
        app.clients(Bearer::token(&no_role))
            .instructions
            .clone()
            .list_instructions(pb::ListInstructionsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let mut expired = claims("portal-jwt", &["auditor"]);
    expired["exp"] = (now() - 600).into();
    let mut audience = claims("portal-jwt", &["auditor"]);
    audience["aud"] = "another-service".into();
    let mut early = claims("portal-jwt", &["auditor"]);
    early["nbf"] = (now() + 600).into();
    let stranger = Signer::new("k1");
    for (case, token, says) in [
        ("expired", signer.sign("k1", expired), "expired"),
        ("wrong audience", signer.sign("k1", audience), "audience"),
        ("not yet valid", signer.sign("k1", early), "not valid yet"),
        (
            "unknown key id",
            signer.sign("k9", claims("p", &["auditor"])),
            "key id",
        ),
        (
            "another key",
            stranger.sign("k1", claims("p", &["auditor"])),
            "signature",
        ),
    ] {
        let status = list_as(&app, &token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
        assert!(status.message().contains(says), "{case}: {status:?}");
    }
    app.stop().await;
}

/// A JWKS served over HTTP by the test, which may change its keys.
pub(super) async fn serve_jwks(
    keys: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { keys.lock().unwrap().to_string() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks.json")
}

/// A token naming a key id the server does not hold fetches the set
/// again; a change of the auth file that keeps the URL keeps the keys,
/// even while the provider is away.
async fn a_jwks_url_is_fetched_again_for_a_key_it_did_not_hold(db: TestDb) {
    let first = Signer::new("k1");
    let keys = std::sync::Arc::new(std::sync::Mutex::new(
        serde_json::json!({ "keys": [first.jwk] }),
    ));
    let url = serve_jwks(keys.clone()).await;
    let app = TestApp::spawn_authenticated(
        &db,
        &format!(
            "jwt:\n  jwks_url: {url}\n  issuer: https://idp.test\n  audience: dsr-orchestrator\n  refetch: 0s\n"
        ),
        |c| c.reload_interval = Duration::from_millis(50),
    )
    .await;
    let token = first.sign("k1", claims("portal-jwt", &["auditor"]));
    assert!(list_as(&app, &token).await.is_ok());
    // The provider rotates its key: a token signed with the new one names
    // a key id the server has not seen, and it fetches the set again.
    let second = Signer::new("k2");
    *keys.lock().unwrap() = serde_json::json!({ "keys": [first.jwk, second.jwk] });
    let rotated = second.sign("k2", claims("portal-jwt", &["auditor"]));
    assert!(
        list_as(&app, &rotated).await.is_ok(),
        "the new key was fetched"
    );

    // The provider goes away (it answers no key set), and the auth file
    // changes elsewhere: the server reads the file again but keeps the
    // keys it holds for the same URL.
    *keys.lock().unwrap() = serde_json::Value::Null;
    let added = "a-token-added-while-the-provider-is-away";
    let file = std::fs::read_to_string(app.auth_file()).unwrap();
    let entry = format!(
        "  - principal: added\n    sha256: {}\n    roles: [auditor]\n",
        token_hash(added)
    );
    let file = file.replacen("tokens:\n", &format!("tokens:\n{entry}"), 1);
    std::fs::write(app.auth_file(), file).unwrap();
    let read = async {
        while list_as(&app, added).await.is_err() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server reads the file again");
    assert!(
        list_as(&app, &rotated).await.is_ok(),
        "the keys held for the URL are kept"
    );
    app.stop().await;
}

async fn a_static_token_taken_out_of_the_auth_file_is_refused(db: TestDb) {
    let revocable = "a-token-about-to-be-revoked";
    let app = TestApp::spawn_authenticated(
        &db,
        &format!(
            "  - principal: temporary\n    sha256: {}\n    roles: [auditor]\n",
            token_hash(revocable)
        ),
        |c| c.reload_interval = Duration::from_millis(50),
    )
    .await;
    assert!(list_as(&app, revocable).await.is_ok());
    std::fs::write(app.auth_file(), harness_auth_file("")).unwrap();
    // The server checks the file every 50 ms: wait (bounded) for it to
    // notice the change.
    let mut refused = None;
    for _ in 0..200 {
        match list_as(&app, revocable).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(status) => {
                refused = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(refused, Some(Code::Unauthenticated), "revoked");
    assert!(
        list_as(&app, crate::harness::app::HARNESS_TOKEN)
            .await
            .is_ok()
    );
    // A file emptied of every principal leaves the server closed, not open.
    std::fs::write(app.auth_file(), "{}").unwrap();
    for _ in 0..200 {
        if list_as(&app, crate::harness::app::HARNESS_TOKEN)
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let anonymous = app
        .clients(Bearer::default())
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

async fn submitters_see_only_their_own_requests(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |_| {}).await;
    register(&app, pull_processor("puller", 60_000)).await;
    let mine = app.clients(Bearer::token(&role_token(Role::Submitter)));
    let other = app.clients(Bearer::token(OTHER_SUBMITTER));
    let original = deletion("owner@example.com");
    let request = mine
        .requests
        .clone()
        .submit_request(original.clone())
        .await
        .unwrap()
        .into_inner();
    let id = request.request_id.clone();
    assert_eq!(request.submitted_by, "submitter");

    assert_eq!(get_code(&other, &id).await, Code::NotFound);
    assert_eq!(get_code(&mine, &id).await, Code::Ok);
    let auditor = app.clients(Bearer::token(&role_token(Role::Auditor)));
    assert_eq!(get_code(&auditor, &id).await, Code::Ok);
    let watch = other
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::NotFound);
    let cancel = other
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: id.clone(),
            reason: "not mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    let record = other
        .requests
        .clone()
        .get_completion_record(pb::GetCompletionRecordRequest {
            request_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(record.code(), Code::NotFound);
    // The same id and content from another submitter learn nothing.
    let reuse = other
        .requests
        .clone()
        .submit_request(original)
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::AlreadyExists);

    other
        .requests
        .clone()
        .submit_request(deletion("other@example.com"))
        .await
        .unwrap();
    let listed = |rs: Vec<pb::DataSubjectRequest>| -> Vec<String> {
        rs.into_iter().map(|r| r.submitted_by).collect()
    };
    assert_eq!(
        listed(list_as(&app, &role_token(Role::Submitter)).await.unwrap()),
        ["submitter"]
    );
    assert_eq!(
        listed(list_as(&app, OTHER_SUBMITTER).await.unwrap()),
        ["other-submitter"]
    );
    assert_eq!(
        list_as(&app, &role_token(Role::Auditor))
            .await
            .unwrap()
            .len(),
        2
    );
    app.stop().await;
}

async fn get_code(clients: &Clients, id: &str) -> Code {
    match clients
        .requests
        .clone()
        .get_request(pb::GetRequestRequest {
            request_id: id.into(),
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn every_change_records_who_made_it(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |_| {}).await;
    let admin = app.clients(Bearer::token(&role_token(Role::Admin)));
    let operator = app.clients(Bearer::token(&role_token(Role::Operator)));
    let submitter = app.clients(Bearer::token(&role_token(Role::Submitter)));
    let registered = admin
        .processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(pull_processor("puller", 60_000)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.processor.unwrap().updated_by, "admin");
    let token = registered.callback_token;
    let second = submit(&app, deletion("second@example.com")).await;

    let first = submitter
        .requests
        .clone()
        .submit_request(deletion("actors@example.com"))
        .await
        .unwrap()
        .into_inner();
    let pulled = pull(&app, &token, 10).await;
    let of_first = pulled
        .iter()
        .find(|i| i.request_id == first.request_id)
        .unwrap();
    operator
        .instructions
        .clone()
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: of_first.instruction_id.clone(),
            result: result(pb::Outcome::NoData),
            note: "checked by hand".into(),
        })
        .await
        .unwrap();
    operator
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: second.request_id.clone(),
            reason: "duplicate".into(),
        })
        .await
        .unwrap();

    let actors = |events: Vec<pb::RequestEvent>| -> Vec<(pb::RequestEventType, String)> {
        events.into_iter().map(|e| (e.r#type(), e.actor)).collect()
    };
    use pb::RequestEventType::{Cancelled, Completed, InstructionChanged, Received};
    assert_eq!(
        actors(watch_to_end(&app.requests, &first.request_id).await),
        [
            (Received, "submitter".to_string()),
            (InstructionChanged, "system".to_string()),
            (InstructionChanged, "operator".to_string()),
            (Completed, "operator".to_string()),
        ]
    );
    assert_eq!(
        actors(watch_to_end(&app.requests, &second.request_id).await),
        [
            (Received, "harness".to_string()),
            (InstructionChanged, "system".to_string()),
            (InstructionChanged, "operator".to_string()),
            (Cancelled, "operator".to_string()),
        ]
    );
    let rotated = admin
        .processors
        .clone()
        .rotate_callback_token(pb::RotateCallbackTokenRequest {
            processor_id: "puller".into(),
        })
        .await
        .unwrap();
    drop(rotated);
    let processor = app
        .processors
        .clone()
        .get_processor(pb::GetProcessorRequest {
            processor_id: "puller".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(processor.updated_by, "admin");
    app.stop().await;
}
