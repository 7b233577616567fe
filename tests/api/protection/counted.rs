//! Erasure and resealing on `/metrics`: the requests erased and the
//! suppression entries they left, the finished requests whose erasure is
//! overdue, and the values resealed. The data protection task is off here
//! and the test erases and reseals by hand, at the moments it chooses (the
//! task's own passes are `erasure`'s subject).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::pb;
use dsr_orchestrator::seal::Keyring;
use dsr_orchestrator::startup::Options;
use dsr_orchestrator::store::{Store, StoreObserver, StoreOptions};

use super::*;
use crate::backends;

backends!(erasure_and_resealing_are_counted);

/// `--erase-interval` in the tests: an erasure is overdue two intervals
/// after it fell due.
const ERASE_INTERVAL: Duration = Duration::from_secs(3600);
/// `--report-window`, the default.
const REPORT_WINDOW: Duration = Duration::from_secs(7 * 86400);

/// What a store told its observer of resealing, call by call.
#[derive(Default)]
struct Resealings(Mutex<Vec<(u64, u64)>>);

impl StoreObserver for Resealings {
    fn resealed(&self, values: u64, fingerprints: u64) {
        self.0.lock().unwrap().push((values, fingerprints));
    }
}

/// A finished deletion falls due for erasure at once, a completed access
/// request after the report window; each is overdue two erase intervals
/// later, and counted so until a pass erases it; the counters count what
/// the pass did. After a key rotation, a resealing pass counts the values
/// it sealed again, each transaction's as it commits.
async fn erasure_and_resealing_are_counted(db: TestDb) {
    let clock = ManualClock::new();
    let (k1, k2) = (new_key(), new_key());
    let spawn = |keys: String| {
        let db = &db;
        let options = Options {
            run_protection: false,
            ..manual_options(&clock)
        };
        async move {
            TestApp::spawn_with(db, options, move |c| {
                c.keys = Some(keys);
                c.erase_interval = ERASE_INTERVAL;
                c.report_window = REPORT_WINDOW;
            })
            .await
        }
    };
    let app = spawn(keys_file(("k1", &k1), &[])).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    let deleted = submit(&app, deletion("nina.counted@example.org")).await;
    let mut access = deletion("otto.counted@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    let access = submit(&app, access).await;
    let open = submit(&app, deletion("paula.open@example.org")).await;
    let overdue = "dsr_requests_erasure_overdue";
    assert_eq!(app.sample(overdue).await, 0.0, "nothing finished yet");

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
    assert_eq!(record(&app, &deleted.request_id).await.lines.len(), 1);
    assert_eq!(record(&app, &access.request_id).await.lines.len(), 1);
    // The deletion is due at once, overdue two erase intervals later.
    assert_eq!(app.sample(overdue).await, 0.0);
    let minute = Duration::from_secs(60);
    clock.advance(2 * ERASE_INTERVAL - minute);
    assert_eq!(app.sample(overdue).await, 0.0);
    clock.advance(2 * minute);
    assert_eq!(app.sample(overdue).await, 1.0);
    // The access request keeps its data for the report, then likewise.
    clock.advance(REPORT_WINDOW - 2 * minute);
    assert_eq!(app.sample(overdue).await, 1.0);
    clock.advance(2 * minute);
    assert_eq!(app.sample(overdue).await, 2.0);
    assert_eq!(app.sample("dsr_requests_erased_total").await, 0.0);

    let erased = app
        .store
        .erase_finished(clock.now(), REPORT_WINDOW)
        .await
        .unwrap();
    assert_eq!(erased.requests, 2, "{erased:?}");
    // The deletion's two identities, and nothing of the access request.
    let listed = db.texts("select request_id from suppressions").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for row in &listed {
        assert_eq!(row[0].as_deref(), Some(deleted.request_id.as_str()));
    }
    assert_eq!(app.sample(overdue).await, 0.0);
    assert_eq!(app.sample("dsr_requests_erased_total").await, 2.0);
    assert_eq!(app.sample("dsr_suppression_entries_added_total").await, 2.0);
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
    assert_eq!(app.sample(values).await, under_k1);
    // A pass with nothing left to do counts nothing.
    assert_eq!(app.store.reseal(500).await.unwrap().values, 0);
    assert_eq!(app.sample(values).await, under_k1);
    app.stop().await;

    // Each transaction is told as it commits: back under k1, one value a
    // transaction, one call each.
    let keys = Keyring::parse(&keys_file(("k1", &k1), &[("k2", &k2)])).unwrap();
    let options = StoreOptions {
        keys: Some(Arc::new(keys)),
        ..StoreOptions::default()
    };
    let told = Arc::new(Resealings::default());
    let store = Store::connect(&db.url, &options)
        .await
        .unwrap()
        .with_observer(told.clone());
    let resealed = store.reseal(1).await.unwrap();
    assert_eq!(resealed.values as f64, under_k1, "{resealed:?}");
    let calls = told.0.lock().unwrap().clone();
    assert_eq!(calls, vec![(1, 0); under_k1 as usize]);
    store.close().await;
}
