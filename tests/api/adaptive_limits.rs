//! The adaptive delivery limit of a push processor registered without a
//! `max_in_flight`: it doubles per round trip while the processor keeps
//! up, up to its ceiling, halves once per round trip of failures, and
//! grows back one per round trip. One pass at a time, each pass a round
//! trip; the fake answers at once, far from half its 2 s timeout.

use std::sync::Arc;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::dispatch::concurrency::{CEILING, START};
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    an_unset_limit_doubles_per_round_trip_up_to_its_ceiling,
    failures_halve_it_once_per_round_trip_and_it_grows_back
);

/// An app run one pass at a time, with `elastic` (no `max_in_flight`)
/// answering `reply`, and `count` deletions for it.
async fn elastic_queue(db: &TestDb, reply: Reply, count: usize) -> (TestApp, FakeProcessor) {
    let options = Options {
        clock: Arc::new(ManualClock::new()),
        run_dispatcher: false,
        ..Options::default()
    };
    let app = TestApp::spawn_with(db, options, |c| {
        c.breaker_failures = 0;
        // Submitted from one caller, faster than its rate limit allows.
        c.rate_limit = 1_000_000.0;
    })
    .await;
    let fake = FakeProcessor::start(reply).await;
    let elastic = push_processor("elastic", &fake.endpoint());
    assert_eq!(elastic.max_in_flight, 0, "adaptive");
    register(&app, elastic).await;
    for first in (0..count).step_by(32) {
        let chunk = (first..count.min(first + 32))
            .map(|n| submit(&app, deletion(&format!("e{n}@example.com"))));
        futures::future::join_all(chunk).await;
    }
    (app, fake)
}

/// The claims of consecutive passes, until one claims nothing or `most`
/// passes were made.
async fn passes(app: &TestApp, most: usize) -> Vec<usize> {
    let mut claimed = Vec::new();
    while claimed.len() < most {
        match app.dispatcher.run_once().await.unwrap() {
            0 => break,
            n => claimed.push(n),
        }
    }
    claimed
}

/// The `dsr_delivery_limit` of `elastic` on `app`.
async fn limit_gauge(app: &TestApp) -> u32 {
    let (_, text) = app.admin_get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix("dsr_delivery_limit{processor=\"elastic\"} "))
        .expect("the limit is exported")
        .trim()
        .parse()
        .unwrap()
}

async fn an_unset_limit_doubles_per_round_trip_up_to_its_ceiling(db: TestDb) {
    assert_eq!((START, CEILING), (16, 512));
    let doublings = (CEILING / START).trailing_zeros();
    let full: usize = (0..=doublings).map(|k| (START as usize) << k).sum();
    let (app, fake) = elastic_queue(&db, Reply::done(pb::Outcome::Completed), full + 10).await;
    let got = passes(&app, 10).await;
    // Each full pass grows the limit by one per answer; the last pass,
    // far from full, teaches it nothing.
    assert_eq!(got, [16, 32, 64, 128, 256, 512, 10]);
    assert_eq!(limit_gauge(&app).await, CEILING, "not past the ceiling");
    assert_eq!(fake.deliveries().len(), full + 10);
    app.stop().await;
}

async fn failures_halve_it_once_per_round_trip_and_it_grows_back(db: TestDb) {
    let (app, fake) = elastic_queue(&db, Reply::Error(Code::Unavailable), 40).await;
    // Sixteen failures in one round trip cut it once, to eight; and so on
    // down to one. The retries are not due yet: the clock stands still.
    assert_eq!(passes(&app, 5).await, [16, 8, 4, 2, 1]);
    assert_eq!(limit_gauge(&app).await, 1);
    // Healthy again: one more per round trip.
    fake.set_default(Reply::done(pb::Outcome::Completed));
    assert_eq!(passes(&app, 4).await, [1, 2, 3, 3]);
    assert_eq!(limit_gauge(&app).await, 4);
    assert_eq!(fake.deliveries().len(), 40);
    app.stop().await;
}
