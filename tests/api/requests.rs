//! Reading, listing, cancelling and watching requests.

use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    cancel_mid_flight_is_watched_to_the_end,
    cancel_before_any_claim_goes_from_received_to_cancelled,
    list_pages_and_filters
);

/// A request cancelled before any processor took an instruction goes from
/// RECEIVED straight to CANCELLED, as the lifecycle says: no event of its
/// history reports it IN_PROGRESS.
async fn cancel_before_any_claim_goes_from_received_to_cancelled(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    register(&app, pull_processor("puller", 60_000)).await;
    let req = submit(&app, deletion("trent@example.com")).await;
    let cancelled = app
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: req.request_id.clone(),
            reason: "duplicate of another request".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), pb::RequestStatus::Cancelled);
    let events = watch_to_end(&app.requests, &req.request_id).await;
    let history: Vec<_> = events
        .iter()
        .map(|e| (e.r#type(), e.request_status()))
        .collect();
    assert_eq!(
        history,
        [
            (pb::RequestEventType::Received, pb::RequestStatus::Received),
            (
                pb::RequestEventType::InstructionChanged,
                pb::RequestStatus::Received
            ),
            (
                pb::RequestEventType::Cancelled,
                pb::RequestStatus::Cancelled
            ),
        ]
    );
}

/// Test 10: cancel mid-flight; WatchRequest sees every event in order and
/// ends; the processor that had the instruction gets a cancel notice.
async fn cancel_mid_flight_is_watched_to_the_end(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let quick = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let slow = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("quick", &quick.endpoint())).await;
    register(&app, push_processor("slow", &slow.endpoint())).await;
    let req = submit(&app, deletion("mallory@example.com")).await;
    let slow_id = req
        .instructions
        .iter()
        .find(|i| i.processor_id == "slow")
        .unwrap()
        .instruction_id
        .clone();
    let quick_id = req
        .instructions
        .iter()
        .find(|i| i.processor_id == "quick")
        .unwrap()
        .instruction_id
        .clone();
    wait_for_state(&app, &slow_id, pb::InstructionState::Acknowledged).await;
    wait_for_state(&app, &quick_id, pb::InstructionState::Completed).await;

    let err = app
        .requests
        .clone()
        .get_completion_record(pb::GetCompletionRecordRequest {
            request_id: req.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "no record while open");

    // Watch from the start, concurrently with the cancel.
    let watcher = {
        let client = app.requests.clone();
        let id = req.request_id.clone();
        tokio::spawn(async move { watch_to_end(&client, &id).await })
    };
    let cancelled = app
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: req.request_id.clone(),
            reason: "consumer withdrew the request".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), pb::RequestStatus::Cancelled);
    assert_eq!(cancelled.cancel_reason, "consumer withdrew the request");

    let events = watcher.await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0].r#type(), pb::RequestEventType::Received);
    let last = events.last().unwrap();
    assert_eq!(last.r#type(), pb::RequestEventType::Cancelled);
    assert_eq!(last.request_status(), pb::RequestStatus::Cancelled);
    let slow_states: Vec<_> = events
        .iter()
        .filter_map(|e| e.instruction.as_ref())
        .filter(|i| i.instruction_id == slow_id)
        .map(|i| i.state())
        .collect();
    assert_eq!(
        slow_states,
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Acknowledged,
            pb::InstructionState::Cancelled
        ]
    );

    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Cancelled);
    assert_eq!(record.note, "cancelled: consumer withdrew the request");
    let states: Vec<_> = record
        .lines
        .iter()
        .map(|l| (l.processor_id.as_str(), l.state(), l.resolved_by.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("quick", pb::InstructionState::Completed, "processor"),
            ("slow", pb::InstructionState::Cancelled, "system")
        ]
    );

    // The processor holding the instruction is told.
    slow.wait_for_calls(2).await;
    assert_eq!(slow.cancels()[0].instruction_id, slow_id);
    assert!(
        quick.cancels().is_empty(),
        "finished instructions are not cancelled"
    );

    let err = app
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: req.request_id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Resuming after the last event yields an empty, finished stream.
    let mut resumed = app
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: req.request_id.clone(),
            after_sequence: last.sequence,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resumed.message().await.unwrap().is_none());

    let err = app
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: new_id(),
            after_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

/// ListRequests pages newest-first with opaque tokens and filters.
async fn list_pages_and_filters(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    register(&app, push_processor("group-co", &fake.endpoint())).await;
    let base = 1_767_225_600; // 2026-01-01T00:00:00Z
    let mut ids = Vec::new();
    for day in 0..5 {
        let mut req = deletion(&format!("user{day}@example.com"));
        req.submitted_at = Some(prost_types::Timestamp {
            seconds: base + day * 86_400,
            nanos: 0,
        });
        if day == 4 {
            req.kind = pb::RequestKind::Access as i32;
            req.access_scope = pb::AccessScope::SpecificPieces as i32;
        }
        ids.push(submit(&app, req).await.request_id);
    }
    // An instruction line as (instruction id, processor id).
    let lines = |r: &pb::DataSubjectRequest| {
        r.instructions
            .iter()
            .map(|i| (i.instruction_id.clone(), i.processor_id.clone()))
            .collect::<Vec<_>>()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .requests
            .clone()
            .list_requests(pb::ListRequestsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        for listed in &page.requests {
            // Each listed request carries its own instructions, in
            // processor order, as GetRequest shows them.
            let got = get_request(&app, &listed.request_id).await;
            assert_eq!(lines(listed), lines(&got));
            let processors: Vec<_> = lines(listed).into_iter().map(|(_, p)| p).collect();
            assert_eq!(processors, ["group-co", "vendor"]);
        }
        seen.extend(page.requests.into_iter().map(|r| r.request_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    ids.reverse();
    assert_eq!(seen, ids, "newest submission first, each once");

    // A page token serves only the listing it came from: with another
    // filter it is refused, not read as a place in the other listing.
    let first = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refused = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
            kind: pb::RequestKind::Delete as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["page_token"]);
    let next = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            page_size: 3,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.requests.len(), 3, "the page size may change");

    let deletions = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            kind: pb::RequestKind::Delete as i32,
            submitted_after: Some(prost_types::Timestamp {
                seconds: base + 86_400,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(deletions.len(), 3, "days 1, 2 and 3");
    let completed = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest {
            status: pb::RequestStatus::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert!(completed.is_empty());
    app.stop().await;
}
