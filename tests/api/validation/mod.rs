//! Bad input on every RPC: each is answered `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` violation per bad field, named by its path in the
//! contract, and leaves the database as it was.
//!
//! Each test is a table of `(case, message, expected field paths)`: the
//! message is a valid one with one thing broken (or a few, to show that all
//! problems are reported in one answer). [`expect_rejections`] sends every
//! case and checks its answer, and that nothing was stored or changed.
//!
//! One module per service; SubmitRequest and RegisterProcessor, whose
//! messages have the most fields, have their own. `limits` holds what the
//! tables imply from the other side: values at the limits are accepted.

mod instruction_service;
mod limits;
mod processor_service;
mod register_processor;
mod request_service;
mod submit_request;

use std::fmt::Debug;

use dsr_orchestrator::pb;
use prost_types::Timestamp;
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use crate::harness::*;

/// The subject's email in every submitted request; it must never be echoed.
const EMAIL: &str = "subject@example.com";

/// Cases for one RPC: a name, the message to send, and the field paths the
/// rejection must name, in order.
type Table<M> = Vec<(&'static str, M, &'static [&'static str])>;

/// Runs a table against one RPC: `send` makes the call with each case's
/// message, which must be rejected (see [`rejected`]) with exactly the
/// expected field paths; after each, `state` must read as it did before the
/// first (`async || ()` where a test checks its state once, after the
/// table). Failures name the RPC and the case.
async fn expect_rejections<M, T: Debug, S: PartialEq + Debug>(
    rpc: &str,
    cases: Table<M>,
    mut send: impl AsyncFnMut(M) -> Result<Response<T>, Status>,
    mut state: impl AsyncFnMut() -> S,
) {
    let before = state().await;
    for (case, msg, expected) in cases {
        let case = format!("{rpc}: {case}");
        assert_eq!(rejected(&case, send(msg).await), expected, "{case}");
        assert_eq!(state().await, before, "{case}: changed");
    }
}

/// The field paths of a rejection, after checking that it is one: an
/// `INVALID_ARGUMENT` whose every violation says what is wrong, without
/// repeating the subject's email.
fn rejected<T: Debug>(case: &str, result: Result<Response<T>, Status>) -> Vec<String> {
    let status = match result {
        Ok(r) => panic!("{case}: accepted: {:?}", r.get_ref()),
        Err(s) => s,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    let details = status.get_error_details();
    let bad = details
        .bad_request()
        .unwrap_or_else(|| panic!("{case}: no BadRequest details: {status:?}"));
    for v in &bad.field_violations {
        assert!(!v.description.is_empty(), "{case}: {v:?}");
        assert!(!v.description.contains(EMAIL), "{case}: {v:?}");
    }
    assert!(!status.message().contains(EMAIL), "{case}: {status:?}");
    // Nor a credential written into an endpoint.
    assert!(!status.message().contains("s3cret"), "{case}: {status:?}");
    violations(&status)
}

/// A timestamp `offset_secs` from now.
fn from_now(offset_secs: i64) -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Some(Timestamp {
        seconds: now.as_secs() as i64 + offset_secs,
        nanos: 0,
    })
}

fn identity(t: pb::IdentityType, value: &str) -> pb::SubjectIdentity {
    pb::SubjectIdentity {
        r#type: t as i32,
        value: value.into(),
    }
}

/// A valid submission (accepted by the `intake` pull processor).
fn valid_submission() -> pb::SubmitRequestRequest {
    deletion(EMAIL)
}

/// `valid_submission` with `edit` applied.
fn submission(edit: impl FnOnce(&mut pb::SubmitRequestRequest)) -> pb::SubmitRequestRequest {
    let mut r = valid_submission();
    edit(&mut r);
    r
}

/// A valid registration of `newcomer`, with `edit` applied.
fn registration(edit: impl FnOnce(&mut pb::Processor)) -> pb::RegisterProcessorRequest {
    let mut p = push_processor("newcomer", "http://127.0.0.1:9");
    edit(&mut p);
    pb::RegisterProcessorRequest { processor: Some(p) }
}

fn grpc_adapter(endpoint: &str, timeout_ms: u64) -> Option<pb::Adapter> {
    Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
            endpoint: endpoint.into(),
            timeout: ms(timeout_ms),
            tls: None,
        })),
    })
}

fn days(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: n * 86_400,
        nanos: 0,
    })
}

async fn all_processors(app: &TestApp) -> Vec<pb::Processor> {
    app.processors
        .clone()
        .list_processors(pb::ListProcessorsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .processors
}

/// An app with one pull processor, `intake`, which is never delivered to
/// unless it pulls: whatever the tests find stored is what they stored.
async fn app_with_pull_processor(db: &TestDb) -> (TestApp, String) {
    let app = TestApp::spawn(db).await;
    let token = register(&app, pull_processor("intake", 60_000)).await;
    (app, token)
}

/// An open request with one PENDING instruction to `intake`; returns the
/// request id and the instruction id.
async fn open_request(app: &TestApp) -> (String, String) {
    let req = submit(app, valid_submission()).await;
    assert_eq!(req.instructions.len(), 1);
    (req.request_id, req.instructions[0].instruction_id.clone())
}
