//! Limits that hold across replicas: a push processor's `max_in_flight`
//! and `max_deliveries_per_second` count what the whole deployment sends.
//! Three replicas share one PostgreSQL database (SQLite has one replica,
//! which the rate test uses alone). Each check that nothing more arrived is
//! made after every replica has made two more dispatcher passes
//! (`dsr_dispatch_passes_total`), each of which could have sent it.

use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;

use crate::harness::*;
use crate::{backends, postgres_only};

postgres_only!(in_flight_limit_holds_across_three_replicas,);
backends!(delivery_rate_holds_across_replicas,);

/// Replicas of one deployment on `db`, passing every 20 ms.
async fn replicas(db: &TestDb, n: usize, clock: Option<ManualClock>) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..n {
        let mut options = dsr_orchestrator::startup::Options::default();
        if let Some(clock) = &clock {
            options.clock = std::sync::Arc::new(clock.clone());
        }
        apps.push(
            TestApp::spawn_with(db, options, |c| {
                c.poll_interval = Duration::from_millis(20);
            })
            .await,
        );
    }
    apps
}

/// Waits until every replica has made two more passes than now.
async fn two_more_passes(apps: &[TestApp]) {
    for app in apps {
        app.two_more_passes().await;
    }
}

/// Submits `n` deletions, spread over the replicas; their instruction ids.
async fn deletions(apps: &[TestApp], n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let app = &apps[i % apps.len()];
        let r = submit(app, deletion(&format!("limits{i}@example.com"))).await;
        assert_eq!(r.instructions.len(), 1, "{r:?}");
        ids.push(r.instructions[0].instruction_id.clone());
    }
    ids
}

async fn in_flight_limit_holds_across_three_replicas(db: TestDb) {
    let apps = replicas(&db, 3, None).await;
    let fake = FakeProcessor::start(Reply::Hang).await;
    let mut p = push_processor("narrow", &fake.endpoint());
    p.max_in_flight = 3;
    register(&apps[0], p).await;
    let ids = deletions(&apps, 9).await;

    // Three deliveries hang; each replica has room for three of its own,
    // but the deployment has none.
    fake.wait_for_calls(3).await;
    two_more_passes(&apps).await;
    assert_eq!(fake.deliveries().len(), 3);

    fake.set_default(Reply::done(pb::Outcome::Completed));
    fake.release();
    for id in &ids {
        wait_for_state(&apps[0], id, pb::InstructionState::Completed).await;
    }
    let mut delivered: Vec<String> = fake
        .deliveries()
        .into_iter()
        .map(|d| d.instruction_id)
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 9);
    for app in apps {
        app.stop().await;
    }
}

async fn delivery_rate_holds_across_replicas(db: TestDb) {
    let clock = ManualClock::at(
        chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .unwrap()
            .to_utc(),
    );
    let n = if db.postgres_name().is_some() { 3 } else { 1 };
    let apps = replicas(&db, n, Some(clock.clone())).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let mut p = push_processor("metered", &fake.endpoint());
    p.max_in_flight = 100;
    p.max_deliveries_per_second = 2;
    register(&apps[0], p).await;
    let got = apps[0]
        .processors
        .clone()
        .get_processor(pb::GetProcessorRequest {
            processor_id: "metered".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.max_deliveries_per_second, 2);
    let ids = deletions(&apps, 7).await;

    // The clock stands still between steps, so the only deliveries are
    // those the rate allows: a second's worth at once, then 2 a second.
    for (advance_ms, total) in [(0, 2), (1000, 4), (500, 5), (10_000, 7)] {
        clock.advance(Duration::from_millis(advance_ms));
        fake.wait_for_calls(total).await;
        two_more_passes(&apps).await;
        assert_eq!(fake.deliveries().len(), total, "after {advance_ms} ms");
    }
    for id in &ids {
        wait_for_state(&apps[0], id, pb::InstructionState::Completed).await;
    }
    for app in apps {
        app.stop().await;
    }
}
