//! Bad input on every RPC: each is answered `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` violation per bad field, named by its path in the
//! contract, and leaves the database as it was.
//!
//! Each test is a table of `(case, message, expected field paths)`: the
//! message is a valid one with one thing broken (or a few, to show that all
//! problems are reported in one answer). After every rejected call the test
//! checks that nothing was stored or changed.

use std::fmt::Debug;

use dsr_orchestrator::pb;
use prost_types::{FieldMask, Timestamp};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

use crate::backends;
use crate::harness::*;

backends!(
    submit_request_table,
    request_lookups_table,
    cancel_request_table,
    list_requests_table,
    register_processor_table,
    processor_lookups_table,
    list_processors_table,
    update_processor_table,
    processor_callbacks_table,
    pull_instructions_table,
    list_instructions_table,
    operator_controls_table,
    unknown_processor_among_known_ones_is_rejected,
    limits_are_inclusive,
);

/// The subject's email in every submitted request; it must never be echoed.
const EMAIL: &str = "subject@example.com";

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

type Table<M> = Vec<(&'static str, M, &'static [&'static str])>;

/// SubmitRequest: every field, and several problems at once.
async fn submit_request_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let email = || identity(pb::IdentityType::Email, EMAIL);
    let cases: Table<pb::SubmitRequestRequest> = vec![
        (
            "missing request_id",
            submission(|r| r.request_id.clear()),
            &["request_id"],
        ),
        (
            "request_id not a UUID",
            submission(|r| r.request_id = "request-1".into()),
            &["request_id"],
        ),
        (
            "upper-case UUID",
            submission(|r| r.request_id = r.request_id.to_uppercase()),
            &["request_id"],
        ),
        (
            "UUID without hyphens",
            submission(|r| r.request_id = r.request_id.replace('-', "")),
            &["request_id"],
        ),
        (
            "nil UUID",
            submission(|r| r.request_id = uuid::Uuid::nil().to_string()),
            &["request_id"],
        ),
        ("missing kind", submission(|r| r.kind = 0), &["kind"]),
        ("unknown kind", submission(|r| r.kind = 99), &["kind"]),
        (
            "missing jurisdiction",
            submission(|r| r.jurisdiction = 0),
            &["jurisdiction"],
        ),
        (
            "unknown jurisdiction",
            submission(|r| r.jurisdiction = 99),
            &["jurisdiction"],
        ),
        (
            "missing subject",
            submission(|r| r.subject_identities.clear()),
            &["subject_identities"],
        ),
        (
            "21 identities",
            submission(|r| {
                r.subject_identities = (0..21)
                    .map(|i| identity(pb::IdentityType::AccountId, &format!("A-{i}")))
                    .collect()
            }),
            &["subject_identities"],
        ),
        (
            "identity without type",
            submission(|r| r.subject_identities[1].r#type = 0),
            &["subject_identities[1].type"],
        ),
        (
            "identity of unknown type",
            submission(|r| r.subject_identities[1].r#type = 99),
            &["subject_identities[1].type"],
        ),
        (
            "empty identity value",
            submission(|r| r.subject_identities[1].value.clear()),
            &["subject_identities[1].value"],
        ),
        (
            "blank identity value",
            submission(|r| r.subject_identities[1].value = "   ".into()),
            &["subject_identities[1].value"],
        ),
        (
            "1025-character identity value",
            submission(|r| r.subject_identities[1].value = "7".repeat(1025)),
            &["subject_identities[1].value"],
        ),
        (
            "control character in identity value",
            submission(|r| r.subject_identities[0].value = format!("{EMAIL}\n")),
            &["subject_identities[0].value"],
        ),
        (
            "duplicate identities",
            submission(|r| r.subject_identities = vec![email(), email()]),
            &["subject_identities[1]"],
        ),
        (
            "submitted_at an hour in the future",
            submission(|r| r.submitted_at = from_now(3600)),
            &["submitted_at"],
        ),
        (
            "submitted_at before 2000",
            submission(|r| {
                r.submitted_at = Some(Timestamp {
                    seconds: 946_684_799,
                    nanos: 0,
                })
            }),
            &["submitted_at"],
        ),
        (
            "submitted_at with negative nanos",
            submission(|r| {
                r.submitted_at = Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: -1,
                })
            }),
            &["submitted_at"],
        ),
        (
            "missing channel",
            submission(|r| r.channel.clear()),
            &["channel"],
        ),
        (
            "65-character channel",
            submission(|r| r.channel = "c".repeat(65)),
            &["channel"],
        ),
        (
            "channel outside [a-z0-9_-]",
            submission(|r| r.channel = "Web Form".into()),
            &["channel"],
        ),
        (
            "missing requester",
            submission(|r| r.requester = 0),
            &["requester"],
        ),
        (
            "unknown requester",
            submission(|r| r.requester = 99),
            &["requester"],
        ),
        (
            "missing verification",
            submission(|r| r.verification = None),
            &["verification"],
        ),
        (
            "missing verification level",
            submission(|r| r.verification.as_mut().unwrap().level = 0),
            &["verification.level"],
        ),
        (
            "unknown verification level",
            submission(|r| r.verification.as_mut().unwrap().level = 99),
            &["verification.level"],
        ),
        (
            "513-character verification method",
            submission(|r| r.verification.as_mut().unwrap().method = "m".repeat(513)),
            &["verification.method"],
        ),
        (
            "malformed processor id",
            submission(|r| r.processor_ids = vec!["intake".into(), "Intake".into()]),
            &["processor_ids[1]"],
        ),
        (
            "unknown processor id",
            submission(|r| r.processor_ids = vec!["nope".into()]),
            &["processor_ids[0]"],
        ),
        (
            "101 processor ids",
            submission(|r| r.processor_ids = (0..101).map(|i| format!("p-{i}")).collect()),
            &["processor_ids"],
        ),
        (
            "processor that does not handle the kind",
            submission(|r| {
                r.kind = pb::RequestKind::Correct as i32;
                r.processor_ids = vec!["intake".into()];
            }),
            &["processor_ids[0]"],
        ),
        (
            "processor that accepts none of the identity types",
            submission(|r| {
                r.subject_identities = vec![identity(pb::IdentityType::Phone, "+1 555 0100")];
                r.processor_ids = vec!["intake".into()];
            }),
            &["processor_ids[0]"],
        ),
        (
            "257-character label value",
            submission(|r| {
                r.labels.insert("ticket".into(), "x".repeat(257));
            }),
            &["labels[ticket]"],
        ),
        (
            "label key outside [a-z0-9_.-]",
            submission(|r| {
                r.labels.insert("Ticket".into(), "T-1".into());
            }),
            &["labels[Ticket]"],
        ),
        (
            "label key too long (named by its first 63 characters)",
            submission(|r| {
                r.labels.insert("k".repeat(100), "v".into());
            }),
            &["labels[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]"],
        ),
        (
            "33 labels",
            submission(|r| {
                r.labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
            }),
            &["labels"],
        ),
        (
            "everything wrong at once",
            submission(|r| {
                r.request_id = "nope".into();
                r.kind = 99;
                r.jurisdiction = 0;
                r.subject_identities[0].r#type = 42;
                r.subject_identities[1].value.clear();
                r.submitted_at = from_now(3600);
                r.channel = "c".repeat(65);
                r.requester = 0;
                r.verification = None;
                r.processor_ids = vec!["Bad".into()];
            }),
            &[
                "request_id",
                "kind",
                "jurisdiction",
                "subject_identities[0].type",
                "subject_identities[1].value",
                "submitted_at",
                "channel",
                "requester",
                "verification",
                "processor_ids[0]",
            ],
        ),
    ];
    let mut client = app.requests.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.submit_request(msg).await),
            expected,
            "{case}"
        );
        assert!(all_requests(&app).await.is_empty(), "{case}: stored");
        assert!(all_instructions(&app).await.is_empty(), "{case}: stored");
    }
    // The rejections left no trace that blocks a correct submission.
    submit(&app, valid_submission()).await;
    assert_eq!(all_requests(&app).await.len(), 1);
    app.stop().await;
}

/// GetRequest, WatchRequest and GetCompletionRecord: the request id.
async fn request_lookups_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let (open, _) = open_request(&app).await;
    let bad_ids: Table<String> = vec![
        ("missing request_id", String::new(), &["request_id"]),
        ("not a UUID", "request-1".into(), &["request_id"]),
        ("upper-case UUID", open.to_uppercase(), &["request_id"]),
        ("braced UUID", format!("{{{open}}}"), &["request_id"]),
        ("nil UUID", uuid::Uuid::nil().to_string(), &["request_id"]),
    ];
    let before = get_request(&app, &open).await;
    let mut client = app.requests.clone();
    for (case, id, expected) in bad_ids {
        let get = client
            .get_request(pb::GetRequestRequest {
                request_id: id.clone(),
            })
            .await;
        assert_eq!(rejected(&format!("GetRequest: {case}"), get), expected);

        let watch = client
            .watch_request(pb::WatchRequestRequest {
                request_id: id.clone(),
                after_sequence: 0,
            })
            .await
            .map(|r| r.map(|_| ()));
        assert_eq!(rejected(&format!("WatchRequest: {case}"), watch), expected);

        let record = client
            .get_completion_record(pb::GetCompletionRecordRequest { request_id: id })
            .await;
        assert_eq!(
            rejected(&format!("GetCompletionRecord: {case}"), record),
            expected
        );
    }
    assert_eq!(get_request(&app, &open).await, before);
    assert_eq!(all_requests(&app).await.len(), 1);
    app.stop().await;
}

/// CancelRequest: the id and the reason; a rejected cancel cancels nothing.
async fn cancel_request_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let (open, instruction) = open_request(&app).await;
    let cancel = |request_id: &str, reason: &str| pb::CancelRequestRequest {
        request_id: request_id.into(),
        reason: reason.into(),
    };
    let cases: Table<pb::CancelRequestRequest> = vec![
        (
            "missing request_id",
            cancel("", "duplicate"),
            &["request_id"],
        ),
        (
            "upper-case UUID",
            cancel(&open.to_uppercase(), "duplicate"),
            &["request_id"],
        ),
        ("missing reason", cancel(&open, ""), &["reason"]),
        ("blank reason", cancel(&open, "  \t "), &["reason"]),
        (
            "2001-character reason",
            cancel(&open, &"r".repeat(2001)),
            &["reason"],
        ),
        ("both wrong", cancel("nope", ""), &["request_id", "reason"]),
    ];
    let before = get_request(&app, &open).await;
    assert_eq!(before.status(), pb::RequestStatus::Received);
    let instructions_before = all_instructions(&app).await;
    let mut client = app.requests.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.cancel_request(msg).await),
            expected,
            "{case}"
        );
        assert_eq!(get_request(&app, &open).await, before, "{case}: changed");
        assert_eq!(
            all_instructions(&app).await,
            instructions_before,
            "{case}: changed"
        );
    }
    let err = client
        .get_completion_record(pb::GetCompletionRecordRequest {
            request_id: open.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "no record written");
    // The request can still be cancelled properly.
    let cancelled = client
        .cancel_request(cancel(&open, "r".repeat(2000).as_str()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), pb::RequestStatus::Cancelled);
    assert_eq!(cancelled.instructions[0].instruction_id, instruction);
    app.stop().await;
}

/// ListRequests: page size, page token, filters.
async fn list_requests_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    open_request(&app).await;
    let bad_time = Some(Timestamp {
        seconds: 0,
        nanos: 1_000_000_000,
    });
    let cases: Table<pb::ListRequestsRequest> = vec![
        (
            "negative page_size",
            pb::ListRequestsRequest {
                page_size: -1,
                ..Default::default()
            },
            &["page_size"],
        ),
        (
            "garbage page_token",
            pb::ListRequestsRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            },
            &["page_token"],
        ),
        (
            "page_token of another list",
            pb::ListRequestsRequest {
                // A valid ListProcessors token (base64 of a processor id).
                page_token: "aW50YWtl".into(),
                ..Default::default()
            },
            &["page_token"],
        ),
        (
            "bad page_size and page_token together",
            pb::ListRequestsRequest {
                page_size: -1,
                page_token: "garbage!".into(),
                ..Default::default()
            },
            &["page_size", "page_token"],
        ),
        (
            "unknown status",
            pb::ListRequestsRequest {
                status: 99,
                ..Default::default()
            },
            &["status"],
        ),
        (
            "unknown kind",
            pb::ListRequestsRequest {
                kind: 99,
                ..Default::default()
            },
            &["kind"],
        ),
        (
            "unknown jurisdiction",
            pb::ListRequestsRequest {
                jurisdiction: -3,
                ..Default::default()
            },
            &["jurisdiction"],
        ),
        (
            "invalid submitted_after",
            pb::ListRequestsRequest {
                submitted_after: bad_time,
                ..Default::default()
            },
            &["submitted_after"],
        ),
        (
            "invalid submitted_before",
            pb::ListRequestsRequest {
                submitted_before: Some(Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..Default::default()
            },
            &["submitted_before"],
        ),
        (
            "every filter wrong",
            pb::ListRequestsRequest {
                page_size: -5,
                status: 5,
                kind: 7,
                jurisdiction: 5,
                submitted_after: bad_time,
                submitted_before: bad_time,
                ..Default::default()
            },
            &[
                "page_size",
                "status",
                "kind",
                "jurisdiction",
                "submitted_after",
                "submitted_before",
            ],
        ),
    ];
    let mut client = app.requests.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.list_requests(msg).await),
            expected,
            "{case}"
        );
    }
    assert_eq!(all_requests(&app).await.len(), 1);
    app.stop().await;
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
        })),
    })
}

fn days(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: n * 86_400,
        nanos: 0,
    })
}

/// RegisterProcessor: every field of `Processor`.
async fn register_processor_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let endpoint = |e: &'static str| registration(move |p| p.adapter = grpc_adapter(e, 2000));
    let cases: Table<pb::RegisterProcessorRequest> = vec![
        (
            "missing processor",
            pb::RegisterProcessorRequest { processor: None },
            &["processor"],
        ),
        (
            "missing processor_id",
            registration(|p| p.processor_id.clear()),
            &["processor.processor_id"],
        ),
        (
            "upper-case processor_id",
            registration(|p| p.processor_id = "NewComer".into()),
            &["processor.processor_id"],
        ),
        (
            "64-character processor_id",
            registration(|p| p.processor_id = "p".repeat(64)),
            &["processor.processor_id"],
        ),
        (
            "processor_id ending with '-'",
            registration(|p| p.processor_id = "newcomer-".into()),
            &["processor.processor_id"],
        ),
        (
            "missing display_name",
            registration(|p| p.display_name.clear()),
            &["processor.display_name"],
        ),
        (
            "201-character display_name",
            registration(|p| p.display_name = "d".repeat(201)),
            &["processor.display_name"],
        ),
        (
            "missing role",
            registration(|p| p.role = 0),
            &["processor.role"],
        ),
        (
            "unknown role",
            registration(|p| p.role = 99),
            &["processor.role"],
        ),
        (
            "lower-case country",
            registration(|p| p.country = "jp".into()),
            &["processor.country"],
        ),
        (
            "three-letter country",
            registration(|p| p.country = "JPN".into()),
            &["processor.country"],
        ),
        (
            "missing country",
            registration(|p| p.country.clear()),
            &["processor.country"],
        ),
        (
            "no supported kinds",
            registration(|p| p.supported_kinds.clear()),
            &["processor.supported_kinds"],
        ),
        (
            "unknown supported kind",
            registration(|p| p.supported_kinds = vec![2, 99]),
            &["processor.supported_kinds[1]"],
        ),
        (
            "no accepted identity types",
            registration(|p| p.accepted_identity_types.clear()),
            &["processor.accepted_identity_types"],
        ),
        (
            "unspecified identity type",
            registration(|p| p.accepted_identity_types = vec![0]),
            &["processor.accepted_identity_types[0]"],
        ),
        (
            "missing adapter",
            registration(|p| p.adapter = None),
            &["processor.adapter"],
        ),
        (
            "adapter without a kind",
            registration(|p| p.adapter = Some(pb::Adapter { kind: None })),
            &["processor.adapter"],
        ),
        (
            "endpoint without scheme",
            endpoint("dsr.vendor.example:443"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with another scheme",
            endpoint("ftp://dsr.vendor.example:21"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint without port",
            endpoint("https://dsr.vendor.example"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with a path",
            endpoint("https://dsr.vendor.example:443/dsr"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "empty endpoint",
            endpoint(""),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "grpc timeout under 100ms",
            registration(|p| p.adapter = grpc_adapter("http://127.0.0.1:9", 99)),
            &["processor.adapter.grpc.timeout"],
        ),
        (
            "retry policy out of range",
            registration(|p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: ms(2000),
                    max_backoff: ms(1000),
                    multiplier: 0.5,
                    max_attempts: 101,
                })
            }),
            &[
                "processor.retry_policy.max_backoff",
                "processor.retry_policy.multiplier",
                "processor.retry_policy.max_attempts",
            ],
        ),
        (
            "negative initial backoff",
            registration(|p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }),
            &["processor.retry_policy.initial_backoff"],
        ),
        (
            "ack_timeout under 1s",
            registration(|p| p.ack_timeout = ms(999)),
            &["processor.ack_timeout"],
        ),
        (
            "completion_timeout over 90d",
            registration(|p| p.completion_timeout = days(91)),
            &["processor.completion_timeout"],
        ),
        (
            "21 reminders",
            registration(|p| p.max_reminders = Some(21)),
            &["processor.max_reminders"],
        ),
        (
            "1001 in flight",
            registration(|p| p.max_in_flight = 1001),
            &["processor.max_in_flight"],
        ),
        (
            "several fields wrong",
            registration(|p| {
                p.processor_id = "X".into();
                p.role = 42;
                p.country = "jp".into();
                p.adapter = grpc_adapter("not a uri", 2000);
            }),
            &[
                "processor.processor_id",
                "processor.role",
                "processor.adapter.grpc.endpoint",
                "processor.country",
            ],
        ),
    ];
    let before = all_processors(&app).await;
    let mut client = app.processors.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.register_processor(msg).await),
            expected,
            "{case}"
        );
        assert_eq!(all_processors(&app).await, before, "{case}: stored");
    }
    // The valid registration the cases were made from is accepted.
    client
        .register_processor(registration(|_| {}))
        .await
        .unwrap();
    assert_eq!(all_processors(&app).await.len(), before.len() + 1);
    app.stop().await;
}

/// GetProcessor, DisableProcessor and RotateCallbackToken: the id.
async fn processor_lookups_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    let bad_ids: Table<&str> = vec![
        ("missing processor_id", "", &["processor_id"]),
        ("upper-case processor_id", "Intake", &["processor_id"]),
        ("one character", "i", &["processor_id"]),
        ("starts with a digit", "1ntake", &["processor_id"]),
        ("contains a space", "in take", &["processor_id"]),
    ];
    let before = all_processors(&app).await;
    let mut client = app.processors.clone();
    for (case, id, expected) in bad_ids {
        let processor_id = id.to_string();
        let get = client
            .get_processor(pb::GetProcessorRequest {
                processor_id: processor_id.clone(),
            })
            .await;
        assert_eq!(rejected(&format!("GetProcessor: {case}"), get), expected);
        let disable = client
            .disable_processor(pb::DisableProcessorRequest {
                processor_id: processor_id.clone(),
            })
            .await;
        assert_eq!(
            rejected(&format!("DisableProcessor: {case}"), disable),
            expected
        );
        let rotate = client
            .rotate_callback_token(pb::RotateCallbackTokenRequest { processor_id })
            .await;
        assert_eq!(
            rejected(&format!("RotateCallbackToken: {case}"), rotate),
            expected
        );
        assert_eq!(all_processors(&app).await, before, "{case}: changed");
    }
    // The token was not rotated: it still authenticates.
    app.instructions
        .clone()
        .pull_instructions(authed(&token, pb::PullInstructionsRequest::default()))
        .await
        .unwrap();
    app.stop().await;
}

/// ListProcessors: page size and page token.
async fn list_processors_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let cases: Table<pb::ListProcessorsRequest> = vec![
        (
            "negative page_size",
            pb::ListProcessorsRequest {
                page_size: -1,
                page_token: String::new(),
            },
            &["page_size"],
        ),
        (
            "garbage page_token",
            pb::ListProcessorsRequest {
                page_size: 0,
                page_token: "garbage!".into(),
            },
            &["page_token"],
        ),
        (
            "page_token that is not a processor id",
            pb::ListProcessorsRequest {
                page_size: 0,
                // base64url of "Not An Id".
                page_token: "Tm90IEFuIElk".into(),
            },
            &["page_token"],
        ),
        (
            "both wrong",
            pb::ListProcessorsRequest {
                page_size: -100,
                page_token: "garbage!".into(),
            },
            &["page_size", "page_token"],
        ),
    ];
    let mut client = app.processors.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.list_processors(msg).await),
            expected,
            "{case}"
        );
    }
    assert_eq!(all_processors(&app).await.len(), 1);
    app.stop().await;
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// An update of `vendor` with `edit` applied to a copy of its registration
/// and `paths` as the mask.
fn update(edit: impl FnOnce(&mut pb::Processor), paths: &[&str]) -> pb::UpdateProcessorRequest {
    let mut p = push_processor("vendor", "http://127.0.0.1:9");
    edit(&mut p);
    pb::UpdateProcessorRequest {
        processor: Some(p),
        update_mask: mask(paths),
    }
}

/// UpdateProcessor: the mask, the id, and the merged processor.
async fn update_processor_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    register(&app, push_processor("vendor", "http://127.0.0.1:9")).await;
    let cases: Table<pb::UpdateProcessorRequest> = vec![
        (
            "missing update_mask",
            pb::UpdateProcessorRequest {
                update_mask: None,
                ..update(|p| p.display_name = "Renamed".into(), &[])
            },
            &["update_mask"],
        ),
        (
            "empty update_mask",
            update(|p| p.display_name = "Renamed".into(), &[]),
            &["update_mask"],
        ),
        (
            "unknown update_mask path",
            update(
                |p| p.display_name = "Renamed".into(),
                &["display_name", "colour"],
            ),
            &["update_mask.paths[1]"],
        ),
        (
            "nested update_mask path",
            update(|_| {}, &["adapter.grpc.endpoint"]),
            &["update_mask.paths[0]"],
        ),
        (
            "a field named twice in the mask",
            update(|_| {}, &["display_name", "role", "display_name"]),
            &["update_mask.paths[2]"],
        ),
        (
            "processor_id in the mask",
            update(|_| {}, &["processor_id"]),
            &["update_mask.paths[0]"],
        ),
        (
            "output-only fields in the mask",
            update(|_| {}, &["status", "created_at", "updated_at"]),
            &[
                "update_mask.paths[0]",
                "update_mask.paths[1]",
                "update_mask.paths[2]",
            ],
        ),
        (
            "missing processor_id",
            update(|p| p.processor_id.clear(), &["display_name"]),
            &["processor.processor_id"],
        ),
        (
            "malformed processor_id",
            update(|p| p.processor_id = "Vendor".into(), &["display_name"]),
            &["processor.processor_id"],
        ),
        (
            "masked display_name empty",
            update(|p| p.display_name.clear(), &["display_name"]),
            &["processor.display_name"],
        ),
        (
            "masked country lower-case",
            update(|p| p.country = "jp".into(), &["country"]),
            &["processor.country"],
        ),
        (
            "masked role unknown",
            update(|p| p.role = 99, &["role"]),
            &["processor.role"],
        ),
        (
            "masked adapter with malformed endpoint",
            update(
                |p| p.adapter = grpc_adapter("vendor.example", 2000),
                &["adapter"],
            ),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "masked adapter unset",
            update(|p| p.adapter = None, &["adapter"]),
            &["processor.adapter"],
        ),
        (
            "masked retry policy inconsistent",
            update(
                |p| {
                    p.retry_policy = Some(pb::RetryPolicy {
                        initial_backoff: ms(100),
                        max_backoff: ms(50),
                        multiplier: 2.0,
                        max_attempts: 3,
                    })
                },
                &["retry_policy"],
            ),
            &["processor.retry_policy.max_backoff"],
        ),
        (
            "masked ack_timeout over 7d",
            update(|p| p.ack_timeout = days(8), &["ack_timeout"]),
            &["processor.ack_timeout"],
        ),
        (
            "masked max_in_flight over 1000",
            update(|p| p.max_in_flight = 1001, &["max_in_flight"]),
            &["processor.max_in_flight"],
        ),
        (
            "bad mask and bad values",
            update(|p| p.country = "jp".into(), &["country", "nope"]),
            &["update_mask.paths[1]"],
        ),
    ];
    let before = all_processors(&app).await;
    let mut client = app.processors.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.update_processor(msg).await),
            expected,
            "{case}"
        );
        assert_eq!(all_processors(&app).await, before, "{case}: changed");
    }
    app.stop().await;
}

/// AcknowledgeInstruction and CompleteInstruction with a valid token: the
/// instruction id and the reported result.
async fn processor_callbacks_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    let (_, id) = open_request(&app).await;
    let before = all_instructions(&app).await;
    let mut client = app.instructions.clone();

    let bad_ids: Table<String> = vec![
        ("missing instruction_id", String::new(), &["instruction_id"]),
        ("not a UUID", "instruction-1".into(), &["instruction_id"]),
        ("upper-case UUID", id.to_uppercase(), &["instruction_id"]),
        (
            "nil UUID",
            uuid::Uuid::nil().to_string(),
            &["instruction_id"],
        ),
    ];
    for (case, bad, expected) in bad_ids {
        let ack = client
            .acknowledge_instruction(authed(
                &token,
                pb::AcknowledgeInstructionRequest {
                    instruction_id: bad.clone(),
                },
            ))
            .await;
        assert_eq!(rejected(&format!("Acknowledge: {case}"), ack), expected);
        let complete = client
            .complete_instruction(authed(
                &token,
                pb::CompleteInstructionRequest {
                    instruction_id: bad,
                    result: result(pb::Outcome::Completed),
                },
            ))
            .await;
        assert_eq!(rejected(&format!("Complete: {case}"), complete), expected);
        assert_eq!(all_instructions(&app).await, before, "{case}: changed");
    }

    let result = |edit: fn(&mut pb::InstructionResult)| {
        let mut r = pb::InstructionResult {
            outcome: pb::Outcome::Completed as i32,
            ..Default::default()
        };
        edit(&mut r);
        Some(r)
    };
    let denied = |r: &mut pb::InstructionResult| r.outcome = pb::Outcome::Denied as i32;
    let results: Table<Option<pb::InstructionResult>> = vec![
        ("missing result", None, &["result"]),
        (
            "missing outcome",
            result(|r| r.outcome = 0),
            &["result.outcome"],
        ),
        (
            "unknown outcome",
            result(|r| r.outcome = 99),
            &["result.outcome"],
        ),
        (
            "DENIED without exception or explanation",
            result(denied),
            &["result.exception", "result.explanation"],
        ),
        (
            "DENIED with a blank explanation",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = pb::DeletionException::Other as i32;
                r.explanation = "  ".into();
            }),
            &["result.explanation"],
        ),
        (
            "unknown exception",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = 99;
                r.explanation = "kept".into();
            }),
            &["result.exception"],
        ),
        (
            "exception without DENIED",
            result(|r| r.exception = pb::DeletionException::CcpaDebugging as i32),
            &["result.exception"],
        ),
        (
            "FAILED without reason",
            result(|r| r.outcome = pb::Outcome::Failed as i32),
            &["result.reason"],
        ),
        (
            "2001-character explanation",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = pb::DeletionException::Other as i32;
                r.explanation = "e".repeat(2001);
            }),
            &["result.explanation"],
        ),
        (
            "2001-character reason",
            result(|r| {
                r.outcome = pb::Outcome::Failed as i32;
                r.reason = "e".repeat(2001);
            }),
            &["result.reason"],
        ),
        (
            "sub-processor without name, lower-case country",
            result(|r| {
                r.sub_processors = vec![
                    pb::SubProcessor {
                        name: "Backup Co".into(),
                        country: "IL".into(),
                    },
                    pb::SubProcessor {
                        name: String::new(),
                        country: "il".into(),
                    },
                ]
            }),
            &[
                "result.sub_processors[1].name",
                "result.sub_processors[1].country",
            ],
        ),
        (
            "101 sub-processors",
            result(|r| {
                r.sub_processors = (0..101)
                    .map(|i| pb::SubProcessor {
                        name: format!("Sub {i}"),
                        country: String::new(),
                    })
                    .collect()
            }),
            &["result.sub_processors"],
        ),
        (
            "data records for a deletion",
            result(|r| {
                r.records = vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "x".into(),
                    source: String::new(),
                }]
            }),
            &["result.records"],
        ),
        (
            "data records with NO_DATA",
            result(|r| {
                r.outcome = pb::Outcome::NoData as i32;
                r.records = vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "x".into(),
                    source: String::new(),
                }]
            }),
            &["result.records"],
        ),
    ];
    for (case, result, expected) in results {
        let complete = client
            .complete_instruction(authed(
                &token,
                pb::CompleteInstructionRequest {
                    instruction_id: id.clone(),
                    result,
                },
            ))
            .await;
        assert_eq!(rejected(case, complete), expected, "{case}");
        assert_eq!(all_instructions(&app).await, before, "{case}: changed");
    }
    app.stop().await;
}

/// PullInstructions: `max_instructions` from 1 to 100 (0: default).
async fn pull_instructions_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    open_request(&app).await;
    let before = all_instructions(&app).await;
    let cases: Table<i32> = vec![
        ("101", 101, &["max_instructions"]),
        ("-1", -1, &["max_instructions"]),
        ("i32::MIN", i32::MIN, &["max_instructions"]),
        ("i32::MAX", i32::MAX, &["max_instructions"]),
    ];
    let mut client = app.instructions.clone();
    for (case, max, expected) in cases {
        let pulled = client
            .pull_instructions(authed(
                &token,
                pb::PullInstructionsRequest {
                    max_instructions: max,
                },
            ))
            .await;
        assert_eq!(rejected(case, pulled), expected, "{case}");
        assert_eq!(all_instructions(&app).await, before, "{case}: leased");
    }
    // The boundary is accepted and leases the pending instruction.
    let pulled = client
        .pull_instructions(authed(
            &token,
            pb::PullInstructionsRequest {
                max_instructions: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.instructions.len(), 1);
    app.stop().await;
}

/// ListInstructions: page size, page token and filters.
async fn list_instructions_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    open_request(&app).await;
    let list = |edit: fn(&mut pb::ListInstructionsRequest)| {
        let mut r = pb::ListInstructionsRequest::default();
        edit(&mut r);
        r
    };
    let cases: Table<pb::ListInstructionsRequest> = vec![
        (
            "negative page_size",
            list(|r| r.page_size = -1),
            &["page_size"],
        ),
        (
            "garbage page_token",
            list(|r| r.page_token = "garbage!".into()),
            &["page_token"],
        ),
        (
            "page_token that is not an instruction id",
            // base64url of "intake": a ListProcessors token.
            list(|r| r.page_token = "aW50YWtl".into()),
            &["page_token"],
        ),
        ("unknown state", list(|r| r.state = 99), &["state"]),
        (
            "malformed processor_id",
            list(|r| r.processor_id = "Intake".into()),
            &["processor_id"],
        ),
        (
            "malformed request_id",
            list(|r| r.request_id = "request-1".into()),
            &["request_id"],
        ),
        (
            "everything wrong",
            list(|r| {
                r.page_size = -1;
                r.page_token = "garbage!".into();
                r.state = -1;
                r.processor_id = "x".into();
                r.request_id = "y".into();
            }),
            &[
                "page_size",
                "state",
                "processor_id",
                "request_id",
                "page_token",
            ],
        ),
    ];
    let mut client = app.instructions.clone();
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.list_instructions(msg).await),
            expected,
            "{case}"
        );
    }
    assert_eq!(all_instructions(&app).await.len(), 1);
    app.stop().await;
}

/// RetryInstruction and ResolveInstruction: ids, results and notes.
async fn operator_controls_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let (request_id, id) = open_request(&app).await;
    let before = all_instructions(&app).await;
    let mut client = app.instructions.clone();

    let bad_ids: Table<String> = vec![
        ("missing instruction_id", String::new(), &["instruction_id"]),
        ("not a UUID", "instruction-1".into(), &["instruction_id"]),
        ("upper-case UUID", id.to_uppercase(), &["instruction_id"]),
    ];
    for (case, bad, expected) in bad_ids {
        let retry = client
            .retry_instruction(pb::RetryInstructionRequest {
                instruction_id: bad,
            })
            .await;
        assert_eq!(rejected(&format!("Retry: {case}"), retry), expected);
        assert_eq!(all_instructions(&app).await, before, "{case}: changed");
    }

    let no_data = || result(pb::Outcome::NoData);
    let resolve = |instruction_id: &str, result, note: &str| pb::ResolveInstructionRequest {
        instruction_id: instruction_id.into(),
        result,
        note: note.into(),
    };
    let note = "confirmed by phone with the vendor's DPO";
    let cases: Table<pb::ResolveInstructionRequest> = vec![
        (
            "missing instruction_id",
            resolve("", no_data(), note),
            &["instruction_id"],
        ),
        (
            "upper-case instruction_id",
            resolve(&id.to_uppercase(), no_data(), note),
            &["instruction_id"],
        ),
        ("missing result", resolve(&id, None, note), &["result"]),
        ("missing note", resolve(&id, no_data(), ""), &["note"]),
        ("blank note", resolve(&id, no_data(), " \n "), &["note"]),
        (
            "2001-character note",
            resolve(&id, no_data(), &"n".repeat(2001)),
            &["note"],
        ),
        (
            "DENIED without exception",
            resolve(
                &id,
                Some(pb::InstructionResult {
                    outcome: pb::Outcome::Denied as i32,
                    explanation: "invoices kept for tax law".into(),
                    ..Default::default()
                }),
                note,
            ),
            &["result.exception"],
        ),
        (
            "unknown outcome",
            resolve(
                &id,
                Some(pb::InstructionResult {
                    outcome: 99,
                    ..Default::default()
                }),
                note,
            ),
            &["result.outcome"],
        ),
        (
            "everything wrong",
            resolve("nope", None, ""),
            &["instruction_id", "result", "note"],
        ),
    ];
    for (case, msg, expected) in cases {
        assert_eq!(
            rejected(case, client.resolve_instruction(msg).await),
            expected,
            "{case}"
        );
        assert_eq!(all_instructions(&app).await, before, "{case}: changed");
    }
    // Nothing was resolved: the request is still open, without a record.
    let r = get_request(&app, &request_id).await;
    assert_eq!(r.status(), pb::RequestStatus::Received);
    app.stop().await;
}

/// An unknown id in a list of known ones is rejected and stores nothing.
///
/// The violation's index is not asserted: the server sorts and
/// de-duplicates `processor_ids` before checking them against the registry,
/// so it reports the position in the sorted list (here `processor_ids[0]`
/// for the caller's `processor_ids[1]`).
async fn unknown_processor_among_known_ones_is_rejected(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let msg = submission(|r| r.processor_ids = vec!["intake".into(), "archive".into()]);
    let paths = rejected(
        "unknown id after a known one",
        app.requests.clone().submit_request(msg).await,
    );
    // The index is the caller's: "archive" is the second entry.
    assert_eq!(paths, ["processor_ids[1]"]);
    assert!(all_requests(&app).await.is_empty());
    assert!(all_instructions(&app).await.is_empty());
    app.stop().await;
}

/// Values at the documented limits are accepted.
async fn limits_are_inclusive(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let req = submit(
        &app,
        submission(|r| {
            r.subject_identities[1].value = "7".repeat(1024);
            r.subject_identities
                .extend((0..18).map(|i| identity(pb::IdentityType::AccountId, &format!("A-{i}"))));
            r.channel = "c".repeat(64);
            r.submitted_at = from_now(0);
            r.verification.as_mut().unwrap().method = "m".repeat(512);
            r.labels = (0..32)
                .map(|i| (format!("k{i}"), "v".repeat(256)))
                .collect();
        }),
    )
    .await;
    assert_eq!(req.identity_types.len(), 3);
    let old = submit(
        &app,
        submission(|r| {
            r.submitted_at = Some(Timestamp {
                seconds: 946_684_800,
                nanos: 0,
            })
        }),
    )
    .await;
    assert_eq!(old.submitted_at.unwrap().seconds, 946_684_800);

    let processor = app
        .processors
        .clone()
        .register_processor(registration(|p| {
            p.processor_id = format!("p{}", "9".repeat(62));
            p.display_name = "d".repeat(200);
            p.adapter = grpc_adapter("https://dsr.vendor.example:443", 300_000);
            p.ack_timeout = days(7);
            p.completion_timeout = days(90);
            p.max_reminders = Some(20);
            p.max_in_flight = 1000;
            p.retry_policy = Some(pb::RetryPolicy {
                initial_backoff: ms(1),
                max_backoff: days(1),
                multiplier: 10.0,
                max_attempts: 100,
            });
        }))
        .await
        .unwrap()
        .into_inner()
        .processor
        .unwrap();
    assert_eq!(processor.max_in_flight, 1000);
    app.stop().await;
}
