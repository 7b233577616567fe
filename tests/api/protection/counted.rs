//! Erasure and resealing on `/metrics`: the requests erased and the
//! suppression entries they left, the finished requests whose personal
//! data is due and still held, and the values resealed. The data protection
//! task is off here and the test erases and reseals by hand, at the moments
//! it chooses (the task's own passes are `erasure`'s subject).

use std::time::Duration;

use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;

use super::*;
use crate::backends;

backends!(erasure_and_resealing_are_counted);

/// The value of `series` (a name with its labels, as the text format
/// writes them) on `app`'s `/metrics`.
async fn sample(app: &TestApp, series: &str) -> f64 {
    let (status, text) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}:\n{text}"))
}

/// A finished deletion is due for erasure at once and a completed access
/// request after the report window; the gauge shows them until a pass
/// erases them, and the counters count what the pass did. After a key
/// rotation, a resealing pass counts the values it sealed again.
async fn erasure_and_resealing_are_counted(db: TestDb) {
    let clock = ManualClock::new();
    let (k1, k2) = (new_key(), new_key());
    let spawn = |keys: String| {
        let db = &db;
        let options = Options {
            run_protection: false,
            ..manual_options(&clock)
        };
        async move { TestApp::spawn_with(db, options, move |c| c.keys = Some(keys)).await }
    };
    let app = spawn(keys_file(("k1", &k1), &[])).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    let deletion = submit(&app, deletion("nina.counted@example.org")).await;
    let mut access = crate::harness::deletion("otto.counted@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    let access = submit(&app, access).await;
    let open = submit(&app, crate::harness::deletion("paula.open@example.org")).await;
    let awaiting = "dsr_requests_awaiting_erasure";
    assert_eq!(sample(&app, awaiting).await, 0.0, "nothing finished yet");

    for instruction in pull(&app, &token, 10).await {
        if instruction.request_id == open.request_id {
            continue;
        }
        let request = authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: instruction.instruction_id,
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    ..Default::default()
                }),
            },
        );
        app.instructions
            .clone()
            .complete_instruction(request)
            .await
            .unwrap();
    }
    assert_eq!(record(&app, &deletion.request_id).await.lines.len(), 1);
    assert_eq!(record(&app, &access.request_id).await.lines.len(), 1);
    // The deletion is due; the access request keeps its data for the
    // report (7 days by default), then it is due too.
    assert_eq!(sample(&app, awaiting).await, 1.0);
    clock.advance(Duration::from_secs(7 * 86400 + 60));
    assert_eq!(sample(&app, awaiting).await, 2.0);
    assert_eq!(sample(&app, "dsr_requests_erased_total").await, 0.0);

    let erased = app
        .store
        .erase_finished(clock.now(), Duration::from_secs(7 * 86400))
        .await
        .unwrap();
    assert_eq!(erased.requests, 2, "{erased:?}");
    let listed = db
        .texts("select cast(count(*) as text) from suppressions")
        .await;
    let listed: f64 = listed[0][0].as_deref().unwrap().parse().unwrap();
    assert!(listed >= 2.0, "the deletion's identities: {listed}");
    assert_eq!(sample(&app, awaiting).await, 0.0);
    assert_eq!(sample(&app, "dsr_requests_erased_total").await, 2.0);
    assert_eq!(
        sample(&app, "dsr_suppression_entries_added_total").await,
        listed
    );
    app.stop().await;

    // The open request's subject and payload are all that is still
    // sealed, under k1; with k2 active, one pass seals them again.
    let sealed = |key: &str| {
        let db = &db;
        let prefix = format!("v1:{key}:");
        async move {
            stored_texts(db)
                .await
                .into_iter()
                .filter(|(_, text)| text.starts_with(&prefix))
                .count() as f64
        }
    };
    let under_k1 = sealed("k1").await;
    assert!(under_k1 >= 2.0, "{under_k1}");
    let app = spawn(keys_file(("k2", &k2), &[("k1", &k1)])).await;
    let values = "dsr_resealed_total{what=\"values\"}";
    let resealed = app.store.reseal(500).await.unwrap();
    assert_eq!(resealed.values as f64, under_k1, "{resealed:?}");
    assert_eq!(sealed("k1").await, 0.0);
    assert_eq!(sample(&app, values).await, under_k1);
    // A pass with nothing left to do counts nothing.
    assert_eq!(app.store.reseal(500).await.unwrap().values, 0);
    assert_eq!(sample(&app, values).await, under_k1);
    app.stop().await;
}
