//! The audit trail: the request's events form a hash chain whose head the
//! completion record's digest covers, and `VerifyAuditTrail` finds where
//! it was edited.

use dsr_orchestrator::pb;
use tokio_stream::StreamExt;

use super::*;
use crate::backends;

backends!(
    a_tampered_event_is_found,
    the_record_covers_the_trail,
    a_previous_hash_is_read_from_the_event_before,
    a_previous_hash_kept_on_a_row_must_link,
    earlier_histories_are_chained_at_startup,
);

/// The id of a request closed by the push processor the app has.
async fn closed_request(app: &TestApp, email: &str) -> String {
    let req = submit(app, deletion(email)).await;
    app.dispatcher.run_once().await.unwrap();
    watch_to_end(&app.requests, &req.request_id).await;
    req.request_id
}

/// An app with a push processor that completes at once (kept alive by the
/// returned fake).
async fn with_vendor(db: &TestDb) -> (TestApp, FakeProcessor) {
    let (app, _clock) = spawn_at(db, "2026-03-02T09:00:00Z", |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    (app, fake)
}

/// Removes event `seq` of `request` behind the server's back, through the
/// purge's gate (the only way a row of the trail can go).
async fn remove_event(db: &TestDb, request: &str, seq: u64) {
    let gate = match db.postgres_name() {
        Some(_) => "set local dsr.purge = 'on'",
        None => "update purge_gate set open = 1 where id = 1",
    };
    db.execute(&format!(
        "begin; {gate}; delete from request_events where request_id = '{request}' and seq = {seq}; commit"
    ))
    .await;
}

/// Asserts that `VerifyAuditTrail` finds `request`'s first break at event
/// `seq`, with `word` in what it says.
async fn breaks_at(app: &TestApp, request: &str, seq: u64, word: &str) {
    let check = verify_trail(app, request).await;
    assert!(!check.intact);
    let at = check.first_break.expect("a break");
    assert_eq!(at.sequence, seq, "{at:?}");
    assert!(at.problem.contains(word), "{at:?}");
}

/// Editing one event's row in the database, or removing the last one, is
/// reported at that event.
async fn a_tampered_event_is_found(db: TestDb) {
    let (app, _fake) = with_vendor(&db).await;
    let id = closed_request(&app, "pat@example.com").await;
    let intact = verify_trail(&app, &id).await;
    assert!(intact.intact, "{intact:?}");
    assert!(intact.record_checked);
    assert!(intact.events >= 4, "{intact:?}");

    // Someone with database access edits the third event (the outcome).
    db.execute(&format!(
        "update request_events set body = body || ' ' where request_id = '{id}' and seq = 3"
    ))
    .await;
    breaks_at(&app, &id, 3, "hash").await;

    // On another request, the last event removed: the chain still links,
    // but no longer reaches the head the request and the record keep.
    let other = closed_request(&app, "quin@example.com").await;
    let last = verify_trail(&app, &other).await.events;
    remove_event(&db, &other, last).await;
    let cut = verify_trail(&app, &other).await;
    assert!(!cut.intact);
    assert_eq!(cut.first_break.unwrap().sequence, 0, "the head");
    app.stop().await;
}

/// Every event carries its hash and the previous one's, the last event's
/// hash is the record's `audit_head`, and the record's digest is the
/// SHA-256 of its canonical bytes, which include that head.
async fn the_record_covers_the_trail(db: TestDb) {
    let (app, _fake) = with_vendor(&db).await;
    let id = closed_request(&app, "rae@example.com").await;

    let events = watch_to_end(&app.requests, &id).await;
    assert_eq!(events[0].previous_hash, "0".repeat(64));
    for pair in events.windows(2) {
        assert_eq!(pair[1].previous_hash, pair[0].hash, "linked");
    }
    assert!(events.iter().all(|e| e.hash.len() == 64));
    let record = record(&app, &id).await;
    let head = &events.last().unwrap().hash;
    assert_eq!(&record.audit_head, head);
    assert_eq!(record.digest, sha256_hex(&record.canonical_json));
    let canonical = String::from_utf8(record.canonical_json.clone()).unwrap();
    assert!(
        canonical.contains(head.as_str()),
        "the digest covers the head"
    );
    assert_eq!(&verify_trail(&app, &id).await.head, head);
    app.stop().await;
}

/// The events of a request as `WatchRequest` streams them after
/// `after`, up to its closing event.
async fn watch_after(app: &TestApp, id: &str, after: u64) -> Vec<pb::RequestEvent> {
    let stream = app
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: id.into(),
            after_sequence: after,
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends at the closing event")
    .into_iter()
    .map(|e| e.expect("event"))
    .collect()
}

/// Each hash is written once: no row keeps a copy of the previous one, and
/// a watch that resumes in the middle of the history still gets every
/// event's previous hash, the first one's from the event it resumed after;
/// across a missing event it gets none.
async fn a_previous_hash_is_read_from_the_event_before(db: TestDb) {
    let (app, _fake) = with_vendor(&db).await;
    let id = closed_request(&app, "ros@example.com").await;

    let kept = db
        .texts("select cast(count(*) as text) from request_events where prev_hash is not null")
        .await;
    assert_eq!(kept[0][0].as_deref(), Some("0"), "no copies written");
    let all = watch_after(&app, &id, 0).await;
    assert!(all.len() >= 4, "{all:?}");
    for after in 1..all.len() {
        let resumed = watch_after(&app, &id, after as u64).await;
        assert_eq!(resumed, all[after..], "resumed after {after}");
        assert_eq!(resumed[0].previous_hash, all[after - 1].hash);
    }

    // An event removed behind the server's back: the one after it shows
    // no previous hash rather than a link to the one before the gap.
    remove_event(&db, &id, 2).await;
    let gapped = watch_after(&app, &id, 0).await;
    assert_eq!(gapped[1].sequence, 3);
    assert_eq!(gapped[1].previous_hash, "", "no link across the gap");
    assert_eq!(gapped[2].previous_hash, all[2].hash);
    app.stop().await;
}

/// A row that keeps a copy of the previous hash verifies when the copy
/// links and breaks there when it does not; `WatchRequest` shows the
/// copy.
async fn a_previous_hash_kept_on_a_row_must_link(db: TestDb) {
    let (app, _fake) = with_vendor(&db).await;
    let id = closed_request(&app, "sol@example.com").await;
    let derived = watch_after(&app, &id, 0).await;

    db.execute(&format!(
        "update request_events set prev_hash = (select p.hash from request_events p \
         where p.request_id = request_events.request_id and p.seq = request_events.seq - 1) \
         where request_id = '{id}' and seq > 1"
    ))
    .await;
    let linked = verify_trail(&app, &id).await;
    assert!(linked.intact, "{linked:?}");
    assert_eq!(watch_after(&app, &id, 0).await, derived);

    db.execute(&format!(
        "update request_events set prev_hash = '{}' where request_id = '{id}' and seq = 2",
        "0".repeat(64)
    ))
    .await;
    breaks_at(&app, &id, 2, "link").await;
    let shown = watch_after(&app, &id, 1).await;
    assert_eq!(shown[0].previous_hash, "0".repeat(64), "the copy as kept");
    app.stop().await;
}

/// Histories written before events were chained (no hashes, no head) are
/// chained when the server starts, and then verify.
async fn earlier_histories_are_chained_at_startup(db: TestDb) {
    let (app, _clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    let open = submit(&app, deletion("sal@example.com")).await;
    app.stop().await;
    db.execute(
        "update request_events set prev_hash = null, hash = null; \
         update requests set audit_head = null",
    )
    .await;

    let (app, _clock) = spawn_at(&db, "2026-03-02T10:00:00Z", |_| {}).await;
    let chained = verify_trail(&app, &open.request_id).await;
    assert!(chained.intact, "{chained:?}");
    // And the chain goes on from there.
    app.instructions
        .clone()
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: open.instructions[0].instruction_id.clone(),
            result: result(pb::Outcome::NoData),
            note: "checked by hand".into(),
        })
        .await
        .unwrap();
    let closed = verify_trail(&app, &open.request_id).await;
    assert!(closed.intact && closed.record_checked, "{closed:?}");
    assert_eq!(closed.head, record(&app, &open.request_id).await.audit_head);
    app.stop().await;
}
