//! Intake: idempotent submission and requests that match no processor.

use std::time::Duration;

use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    idempotent_submit,
    racing_repeats_are_one_request,
    request_matching_no_processor_completes_at_once,
    registry_changes_count_from_the_next_submission,
    a_registry_changing_at_every_batch_does_not_stop_intake
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
    let err = submit_rejected(&app, changed).await;
    assert_eq!(err.code(), Code::AlreadyExists);

    let listed = all_requests(&app).await;
    assert_eq!(listed.len(), 1);
    let instructions = all_instructions(&app).await;
    assert_eq!(
        instructions.len(),
        1,
        "the repeat created no second instruction"
    );
    app.stop().await;
}

/// Clients racing to submit the same ids, each in its own order: repeats
/// land in the same intake batch as the first submission or in a later
/// one, and every id is still one request with one instruction, the one
/// every caller is answered with.
async fn racing_repeats_are_one_request(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let requests: Vec<_> = (0..8)
        .map(|i| deletion(&format!("racer{i}@example.com")))
        .collect();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..16 {
        let mut mine = requests.clone();
        mine.rotate_left(c % requests.len());
        if c % 2 == 1 {
            mine.reverse();
        }
        let client = app.requests.clone();
        clients.spawn(async move {
            let mut answers = Vec::new();
            for req in mine {
                let r = client.clone().submit_request(req).await;
                answers.push(r.expect("a repeat is answered like the first").into_inner());
            }
            answers
        });
    }
    let mut instruction_of = std::collections::HashMap::new();
    while let Some(answers) = clients.join_next().await {
        for r in answers.unwrap() {
            assert_eq!(r.instructions.len(), 1);
            let first = instruction_of
                .entry(r.request_id.clone())
                .or_insert_with(|| r.instructions[0].instruction_id.clone());
            assert_eq!(
                *first, r.instructions[0].instruction_id,
                "one instruction per id"
            );
        }
    }
    let mut ids: Vec<_> = instruction_of.keys().cloned().collect();
    ids.sort();
    let mut submitted: Vec<_> = requests.iter().map(|r| r.request_id.clone()).collect();
    submitted.sort();
    assert_eq!(ids, submitted);
    let stored = all_instructions(&app).await;
    assert_eq!(
        stored.len(),
        requests.len(),
        "no repeat created an instruction"
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
    // The closing event follows the first, and the record covers the trail.
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2]);
    let check = verify_trail(&app, &r.request_id).await;
    assert!(check.intact && check.record_checked, "{check:?}");
    assert!(fake.deliveries().is_empty());
    app.stop().await;
}

/// Intake plans fan-outs from a copy of the processor registry that it
/// keeps between submissions; every change still counts from the next
/// submission on: a processor registered since can be named and is fanned
/// out to (the copy is read again before a request is rejected), and one
/// disabled since is not (the batch's write finds the registry's
/// generation moved and the batch is planned again).
async fn registry_changes_count_from_the_next_submission(db: TestDb) {
    let app = TestApp::spawn_without_dispatcher(&db).await;
    register(&app, push_processor("vendor", "http://127.0.0.1:1")).await;
    let first = submit(&app, deletion("ann@example.com")).await;
    assert_eq!(processors_of(&first), ["vendor"]);

    register(&app, push_processor("archive", "http://127.0.0.1:1")).await;
    let mut named = deletion("bob@example.com");
    named.processor_ids = vec!["archive".into()];
    assert_eq!(processors_of(&submit(&app, named).await), ["archive"]);
    let all = submit(&app, deletion("cy@example.com")).await;
    assert_eq!(processors_of(&all), ["archive", "vendor"]);

    disable(&app, "vendor").await;
    let after = submit(&app, deletion("dee@example.com")).await;
    assert_eq!(processors_of(&after), ["archive"]);
    let mut disabled = deletion("eve@example.com");
    disabled.processor_ids = vec!["vendor".into()];
    let err = submit_rejected(&app, disabled).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["processor_ids[0]"]);

    // What each caller was told is what was stored.
    assert_eq!(all_instructions(&app).await.len(), 5);
    for r in [&first, &all, &after] {
        assert_eq!(
            processors_of(&get_request(&app, &r.request_id).await),
            processors_of(r)
        );
    }
    app.stop().await;
}

/// Intake writes a batch only if the processor registry's generation is
/// still the one its copy was read at, and plans it again otherwise; a
/// registry that moved before every write would keep a batch waiting
/// forever, so after `STALE_ROUNDS` such rounds the batch is written
/// against a fresh read without the check. Here the generation is a new
/// number at every read (the registry table swapped for a view that makes
/// one up), so no checked write can succeed: the request still goes in,
/// fanned out as the registry says.
async fn a_registry_changing_at_every_batch_does_not_stop_intake(db: TestDb) {
    let app = TestApp::spawn_without_dispatcher(&db).await;
    register(&app, push_processor("vendor", "http://127.0.0.1:1")).await;
    register(&app, push_processor("archive", "http://127.0.0.1:1")).await;
    let first = submit(&app, deletion("ann@example.com")).await;
    assert_eq!(processors_of(&first), ["archive", "vendor"]);

    let generation = if db.postgres_name().is_some() {
        "create sequence registry_moves; \
         create view processor_registry as select 1 as id, nextval('registry_moves') as generation"
    } else {
        "create view processor_registry as select 1 as id, abs(random()) as generation"
    };
    db.execute(&format!(
        "alter table processor_registry rename to processor_registry_kept; {generation}"
    ))
    .await;

    // Bounded: without the fallback this submission never returns.
    let moved = tokio::time::timeout(
        Duration::from_secs(30),
        submit(&app, deletion("bob@example.com")),
    )
    .await
    .expect("intake gave up checking the registry after a few rounds");
    assert_eq!(processors_of(&moved), ["archive", "vendor"]);
    let mut named = deletion("cy@example.com");
    named.processor_ids = vec!["archive".into()];
    assert_eq!(processors_of(&submit(&app, named).await), ["archive"]);
    assert_eq!(all_instructions(&app).await.len(), 5);
    app.stop().await;
}
