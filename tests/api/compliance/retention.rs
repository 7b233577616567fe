//! Retention: closed requests are kept for the retention period after
//! their response, then purged with every row they have; younger ones and
//! open ones stay.

use std::time::{Duration, Instant};

use dsr_orchestrator::domain::{Period, RequestId};
use dsr_orchestrator::pb;
use tonic::Code;

use super::*;
use crate::backends;

backends!(the_purge_removes_only_what_is_past_its_period);

/// With a 30-day retention: a request answered on day 0 is purged on day
/// 31, one answered on day 20 and one still open stay.
async fn the_purge_removes_only_what_is_past_its_period(db: TestDb) {
    let (app, clock) = spawn_at(&db, "2026-01-01T00:00:00Z", |c| {
        c.record_retention = Period::Days(30);
        c.purge_interval = Duration::from_millis(20);
    })
    .await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    register(&app, manual_processor("records-desk")).await;
    let answer = |email: &'static str| {
        let app = &app;
        async move {
            let mut req = deletion(email);
            req.processor_ids = vec!["vendor".into()];
            let req = submit(app, req).await;
            app.dispatcher.run_once().await.unwrap();
            watch_to_end(&app.requests, &req.request_id).await;
            req.request_id
        }
    };
    let old = answer("tia@example.com").await;
    clock.advance(Duration::from_secs(20 * 86400));
    let young = answer("uma@example.com").await;
    let mut open = deletion("val@example.com");
    open.processor_ids = vec!["records-desk".into()];
    let open = submit(&app, open).await.request_id;

    clock.advance(Duration::from_secs(11 * 86400 + 60));
    // The purge runs on its own task: wait until it has taken the old one.
    let started = Instant::now();
    loop {
        let got = app
            .requests
            .clone()
            .get_request(pb::GetRequestRequest {
                request_id: old.clone(),
            })
            .await;
        match got {
            Err(status) if status.code() == Code::NotFound => break,
            _ => {
                assert!(started.elapsed() < Duration::from_secs(30), "not purged");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let gone = RequestId::parse(&old).unwrap();
    assert!(
        app.store
            .events_after(gone, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let record = app
        .requests
        .clone()
        .get_completion_record(pb::GetCompletionRecordRequest {
            request_id: old.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(record.code(), Code::NotFound);
    let instructions = app
        .instructions
        .clone()
        .list_instructions(pb::ListInstructionsRequest {
            request_id: old,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(instructions.instructions.is_empty());

    // The younger and the open one stay, whole.
    let kept = verify_intact(&app, &young).await;
    assert!(kept.record_checked);
    assert_eq!(
        get_request(&app, &open).await.status(),
        pb::RequestStatus::Received
    );
    app.stop().await;
}

/// The audit trail of `id`, checked intact.
async fn verify_intact(app: &TestApp, id: &str) -> pb::AuditTrailVerification {
    let v = verify_trail(app, id).await;
    assert!(v.intact, "{v:?}");
    v
}
