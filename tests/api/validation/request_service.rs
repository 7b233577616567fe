//! RequestService's other RPCs: lookups by request id, CancelRequest and
//! ListRequests. (SubmitRequest has its own module.)

use dsr_orchestrator::pb;
use prost_types::Timestamp;
use tonic::Code;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(
    request_lookups_table,
    cancel_request_table,
    list_requests_table,
);

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
    expect_rejections(
        "GetRequest",
        bad_ids.clone(),
        async |request_id| {
            client
                .get_request(pb::GetRequestRequest { request_id })
                .await
        },
        async || (),
    )
    .await;
    expect_rejections(
        "WatchRequest",
        bad_ids.clone(),
        async |request_id| {
            client
                .watch_request(pb::WatchRequestRequest {
                    request_id,
                    after_sequence: 0,
                })
                .await
                .map(|r| r.map(|_| ()))
        },
        async || (),
    )
    .await;
    expect_rejections(
        "GetCompletionRecord",
        bad_ids,
        async |request_id| {
            client
                .get_completion_record(pb::GetCompletionRecordRequest { request_id })
                .await
        },
        async || (),
    )
    .await;
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
        (
            "reason with a terminal escape",
            cancel(&open, "withdrawn \u{1b}[2J"),
            &["reason"],
        ),
        ("both wrong", cancel("nope", ""), &["request_id", "reason"]),
    ];
    let before = get_request(&app, &open).await;
    assert_eq!(before.status(), pb::RequestStatus::Received);
    let mut client = app.requests.clone();
    expect_rejections(
        "CancelRequest",
        cases,
        async |msg| client.cancel_request(msg).await,
        async || (get_request(&app, &open).await, all_instructions(&app).await),
    )
    .await;
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
    expect_rejections(
        "ListRequests",
        cases,
        async |msg| client.list_requests(msg).await,
        async || (),
    )
    .await;
    assert_eq!(all_requests(&app).await.len(), 1);
    app.stop().await;
}
