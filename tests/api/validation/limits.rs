//! The other side of the tables: values at the documented limits, of
//! SubmitRequest and RegisterProcessor, are accepted.

use dsr_orchestrator::pb;
use prost_types::Timestamp;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(limits_are_inclusive);

/// Values at the documented limits are accepted.
async fn limits_are_inclusive(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let req = submit(
        &app,
        submission(|r| {
            // A type of free text: a telephone number has fewer digits.
            r.subject_identities[1] = identity(pb::IdentityType::Other, &"7".repeat(1024));
            r.subject_identities
                .extend((0..18).map(|i| identity(pb::IdentityType::AccountId, &format!("A-{i}"))));
            r.channel = "c".repeat(64);
            r.submitted_at = from_now(0);
            r.verification.as_mut().unwrap().method = "m".repeat(512);
            r.labels = (0..32)
                .map(|i| (format!("k{i}"), "v".repeat(256)))
                .collect();
        }),
    )
    .await;
    assert_eq!(req.identity_types.len(), 3);
    let old = submit(
        &app,
        submission(|r| {
            r.submitted_at = Some(Timestamp {
                seconds: 946_684_800,
                nanos: 0,
            })
        }),
    )
    .await;
    assert_eq!(old.submitted_at.unwrap().seconds, 946_684_800);

    let processor = app
        .processors
        .clone()
        .register_processor(registration(|p| {
            p.processor_id = format!("p{}", "9".repeat(62));
            p.display_name = "d".repeat(200);
            p.adapter = grpc_adapter("https://dsr.vendor.example:443", 300_000);
            p.ack_timeout = days(7);
            p.completion_timeout = days(90);
            p.max_reminders = Some(20);
            p.max_in_flight = 1000;
            p.retry_policy = Some(pb::RetryPolicy {
                initial_backoff: ms(1),
                max_backoff: days(1),
                multiplier: 10.0,
                max_attempts: 100,
            });
        }))
        .await
        .unwrap()
        .into_inner()
        .processor
        .unwrap();
    assert_eq!(processor.max_in_flight, 1000);
    app.stop().await;
}
