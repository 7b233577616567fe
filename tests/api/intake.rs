//! Intake: idempotent submission and requests that match no processor.

use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    idempotent_submit,
    request_matching_no_processor_completes_at_once
);

/// Test 2: the same id twice is one request; different content is
/// ALREADY_EXISTS.
async fn idempotent_submit(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let req = deletion("frank@example.com");
    let first = submit(&app, req.clone()).await;
    let second = submit(&app, req.clone()).await;
    assert_eq!(first.request_id, second.request_id);
    assert_eq!(
        first.instructions[0].instruction_id,
        second.instructions[0].instruction_id
    );

    let mut changed = req.clone();
    changed.jurisdiction = pb::Jurisdiction::Gdpr as i32;
    let err = app
        .requests
        .clone()
        .submit_request(changed)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let listed = app
        .requests
        .clone()
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(listed.len(), 1);
    let instructions = app
        .instructions
        .clone()
        .list_instructions(pb::ListInstructionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .instructions;
    assert_eq!(
        instructions.len(),
        1,
        "the repeat created no second instruction"
    );
    app.stop().await;
}

/// A request no processor can take completes at once, with a record that
/// says so; the person's own `submitted_at` is kept.
async fn request_matching_no_processor_completes_at_once(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    // Handles deletion and access only.
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let mut req = deletion("grace@example.com");
    req.kind = pb::RequestKind::Portability as i32;
    let submitted = prost_types::Timestamp {
        seconds: 1_767_225_600, // 2026-01-01T00:00:00Z
        nanos: 0,
    };
    req.submitted_at = Some(submitted);
    let r = submit(&app, req).await;
    assert_eq!(r.status(), pb::RequestStatus::Completed);
    assert!(r.instructions.is_empty());
    let events = watch_to_end(&app.requests, &r.request_id).await;
    let types: Vec<_> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        types,
        [
            pb::RequestEventType::Received,
            pb::RequestEventType::Completed
        ]
    );
    let record = record(&app, &r.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    assert!(record.lines.is_empty());
    assert!(record.note.contains("no processor matched"));
    assert_eq!(record.submitted_at, Some(submitted));
    assert!(fake.deliveries().is_empty());
    app.stop().await;
}
