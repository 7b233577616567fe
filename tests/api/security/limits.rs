//! Bounds on what callers may ask: a flood from one caller is held to its
//! rate without starving another; open watch streams are counted per
//! caller; a streamed response counts among the calls in flight until it
//! ends, and a reader who stops reading it is disconnected; a message larger than the transport takes, or a result larger
//! than the domain takes, is a clear refusal and stores nothing.

use std::time::Duration;

use dsr_orchestrator::auth::Role;
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use dsr_orchestrator::startup::Options;
use tonic::Code;
use tonic_types::StatusExt;

use super::{OTHER_SUBMITTER, list, principals_per_role, role_token};
use crate::backends;
use crate::harness::app::{Authed, Bearer, Clients, channel};
use crate::harness::*;

backends!(
    a_flood_from_one_caller_does_not_starve_another,
    watch_streams_are_bounded_per_caller,
    oversized_input_is_refused_clearly,
    a_streamed_report_counts_among_calls_in_flight_until_it_ends,
    a_reader_who_stops_reading_is_disconnected
);

async fn a_flood_from_one_caller_does_not_starve_another(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |c| {
        c.rate_limit = 5.0;
        c.rate_burst = 10.0;
    })
    .await;
    let flooder = app.clients(Bearer::token(&role_token(Role::Submitter)));
    let other = app.clients(Bearer::token(OTHER_SUBMITTER));
    let mut refused = None;
    for _ in 0..60 {
        match flooder
            .requests
            .clone()
            .list_requests(pb::ListRequestsRequest::default())
            .await
        {
            Ok(_) => {}
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the flood is held to its rate");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry = refused.get_error_details().retry_info().cloned();
    assert!(
        retry.and_then(|r| r.retry_delay).is_some(),
        "RetryInfo says when: {refused:?}"
    );
    // Another caller, at the same moment, is served.
    for _ in 0..5 {
        other
            .requests
            .clone()
            .list_requests(pb::ListRequestsRequest::default())
            .await
            .expect("not starved");
    }
    app.stop().await;
}

async fn watch_streams_are_bounded_per_caller(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |c| {
        c.max_watches_per_caller = 2;
    })
    .await;
    register(&app, pull_processor("puller", 60_000)).await;
    let auditor = app.clients(Bearer::token(&role_token(Role::Auditor)));
    let req = submit(&app, deletion("watched@example.com")).await;
    let watch = || {
        let mut client = auditor.requests.clone();
        let request_id = req.request_id.clone();
        async move {
            client
                .watch_request(pb::WatchRequestRequest {
                    request_id,
                    after_sequence: 0,
                })
                .await
        }
    };
    let first = watch().await.expect("first").into_inner();
    let second = watch().await.expect("second").into_inner();
    let third = watch().await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    // Another caller has its own count.
    let operator = app.clients(Bearer::token(&role_token(Role::Operator)));
    let theirs = operator
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: req.request_id.clone(),
            after_sequence: 0,
        })
        .await
        .expect("another caller's watch");
    drop(theirs);
    // A stream that ends gives its place back (the server notices the
    // client hung up when it next looks; wait for it, bounded).
    drop(first);
    let mut reopened = false;
    for _ in 0..200 {
        if watch().await.is_ok() {
            reopened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(reopened, "a closed watch frees its place");
    drop(second);
    app.stop().await;
}

async fn oversized_input_is_refused_clearly(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.max_message_size = 1024 * 1024;
    })
    .await;
    let token = register(&app, pull_processor("puller", 60_000)).await;
    let mut huge = pull_processor("huge", 60_000);
    huge.display_name = "x".repeat(2 * 1024 * 1024);
    let too_big = app
        .processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(huge),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(too_big.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{too_big:?}"
    );
    assert!(too_big.message().contains("too large"), "{too_big:?}");

    // An access answer whose records exceed what one result may carry.
    let mut access = deletion("records@example.com");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    submit(&app, access).await;
    let pulled = pull(&app, &token, 1).await;
    let records = (0..100)
        .map(|i| pb::DataRecord {
            category: "identifiers".into(),
            value: format!("{i}:{}", "v".repeat(8_000)),
            source: "crm".into(),
            ..Default::default()
        })
        .collect();
    let refused = app
        .instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: pulled[0].instruction_id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    records,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), ["result.records"]);
    let listed = all_instructions(&app).await;
    assert!(
        listed
            .iter()
            .all(|i| i.state() != pb::InstructionState::Completed),
        "nothing stored"
    );
    app.stop().await;
}

/// An access request whose report holds about 4 MB of records: far more
/// than the transport sends ahead of a reader who stopped. Returns its id.
async fn a_large_finished_report(app: &TestApp) -> String {
    let processor = FakeProcessor::start(Reply::Accepted).await;
    let token = register(app, push_processor("crm", &processor.endpoint())).await;
    let req = submit(
        app,
        access("streamed@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(app, &id, pb::InstructionState::Acknowledged).await;
    let chunks: Vec<_> = (0..10u32)
        .map(|c| pb::UploadDataRecordsRequest {
            instruction_id: id.clone(),
            chunk_index: c,
            records: (0..1000)
                .map(|i| pb::DataRecord {
                    category: "internet_activity".into(),
                    value: format!("{c}-{i} {}", "v".repeat(400)),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    app.instructions
        .clone()
        .upload_data_records(authed(&token, tokio_stream::iter(chunks)))
        .await
        .expect("uploaded");
    app.instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("completed");
    watch_to_end(&app.requests, &req.request_id).await;
    req.request_id
}

/// Whether a call is served within 10 s (asked every 25 ms).
async fn served_soon(app: &TestApp) -> bool {
    for _ in 0..400 {
        if list(&app.requests).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Opens the report of `request_id` through `client` and reads its first
/// part only; with one call allowed in flight, the harness is then
/// refused.
async fn report_read_once(
    app: &TestApp,
    client: &RequestServiceClient<Authed>,
    request_id: String,
) -> tonic::Streaming<pb::AccessReportPart> {
    let mut stream = client
        .clone()
        .get_access_report(pb::GetAccessReportRequest { request_id })
        .await
        .expect("report")
        .into_inner();
    stream.message().await.expect("first part").expect("a part");
    let refused = list(&app.requests).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    stream
}

/// A report streamed to a reader who does not read on holds its place
/// among the calls in flight until the stream ends, not just until its
/// first part is sent.
async fn a_streamed_report_counts_among_calls_in_flight_until_it_ends(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.max_calls_in_flight = 1;
    })
    .await;
    let request_id = a_large_finished_report(&app).await;
    let stream = report_read_once(&app, &app.requests, request_id).await;
    // The reader hangs up: the server notices when the stream is reset,
    // and the place is free again (waited for, bounded).
    drop(stream);
    assert!(
        served_soon(&app).await,
        "an ended stream gives its place back"
    );
    app.stop().await;
}

/// A reader who stops reading a report, on a connection of its own, has
/// that connection closed once a part has waited for it longer than the
/// server allows (one second here): its place among the calls in flight
/// is free again, and its stream ends in an error, never as a whole
/// report.
async fn a_reader_who_stops_reading_is_disconnected(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.max_calls_in_flight = 1;
        c.stalled_reader_timeout = Duration::from_secs(1);
    })
    .await;
    let request_id = a_large_finished_report(&app).await;
    let reader = Clients::new(channel(app.addr).await, Bearer::default());
    let mut stream = report_read_once(&app, &reader.requests, request_id).await;
    assert!(
        served_soon(&app).await,
        "the stalled reader's place is given back while it still holds its stream"
    );
    let ended = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    assert!(
        ended.is_some(),
        "the stream ends in an error, not as a whole report"
    );
    let closed = r#"dsr_grpc_connections_closed_total{reason="stalled_reader"}"#;
    assert_eq!(app.sample(closed).await, 1.0, "the close is counted");
    app.stop().await;
}
