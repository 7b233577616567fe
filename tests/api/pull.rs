//! The pull adapter, and the time-dependent logic (backoff, leases,
//! completion timeouts and reminders) driven by a manual clock: the
//! dispatcher runs one pass at a time and nothing sleeps.

use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    pull_leases_expire_and_are_offered_again,
    backoff_waits_for_its_time,
    overdue_outcomes_get_reminders_then_escalate,
    acknowledgements_at_once_record_one,
);

/// Test 6: a pulled instruction not acknowledged within the ack timeout is
/// offered again; an acknowledged one is not, and completes.
async fn pull_leases_expire_and_are_offered_again(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let token = register(&app, pull_processor("mainframe", 60_000)).await;
    let req = submit(&app, deletion("heidi@example.com")).await;

    let first = pull(&app, &token, 10).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempts, 1);
    assert_eq!(first[0].state(), pb::InstructionState::Delivering);
    // The identities this processor accepts travel with the pull.
    assert_eq!(first[0].subject_identities.len(), 1);
    assert_eq!(first[0].subject_identities[0].value, "heidi@example.com");
    assert!(
        pull(&app, &token, 10).await.is_empty(),
        "leased: not offered twice"
    );

    clock.advance(Duration::from_secs(61));
    let again = pull(&app, &token, 10).await;
    assert_eq!(again.len(), 1, "lease expired: offered again");
    assert_eq!(again[0].instruction_id, first[0].instruction_id);
    assert_eq!(again[0].attempts, 2);

    let mut client = app.instructions.clone();
    client
        .acknowledge_instruction(authed(
            &token,
            pb::AcknowledgeInstructionRequest {
                instruction_id: again[0].instruction_id.clone(),
            },
        ))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(
        pull(&app, &token, 10).await.is_empty(),
        "acknowledged: not offered again"
    );

    client
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: again[0].instruction_id.clone(),
                result: result(pb::Outcome::Completed),
            },
        ))
        .await
        .unwrap();
    let events = watch_to_end(&app.requests, &req.request_id).await;
    assert_eq!(
        events.last().unwrap().r#type(),
        pb::RequestEventType::Completed
    );
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.lines[0].attempts, 2);

    // A push processor's token cannot pull.
    let fake = FakeProcessor::start(Reply::Accepted).await;
    let push_token = register(&app, push_processor("pusher", &fake.endpoint())).await;
    let err = client
        .pull_instructions(authed(
            &push_token,
            pb::PullInstructionsRequest {
                max_instructions: 1,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    app.stop().await;
}

/// Test 11 (backoff): after a retryable failure nothing is delivered until
/// the scheduled time; then the retry goes out with the same id.
async fn backoff_waits_for_its_time(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    fake.script([Reply::Error(Code::ResourceExhausted)]);
    let mut processor = push_processor("slow-down", &fake.endpoint());
    processor.retry_policy = Some(pb::RetryPolicy {
        initial_backoff: ms(60_000),
        max_backoff: ms(600_000),
        multiplier: 2.0,
        max_attempts: 3,
    });
    register(&app, processor).await;
    let req = submit(&app, deletion("ivan@example.com")).await;

    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(fake.deliveries().len(), 1);
    let pending = app
        .store
        .request(dsr_orchestrator::domain::RequestId::parse(&req.request_id).unwrap())
        .await
        .unwrap()
        .instructions;
    let due = pending[0]
        .next_attempt_at
        .expect("retry scheduled on the row");
    let delay = (due - pending[0].created_at).to_std().unwrap();
    // Jitter keeps the first delay in the upper half of initial_backoff.
    assert!(
        delay >= Duration::from_secs(30) && delay <= Duration::from_secs(60),
        "{delay:?}"
    );

    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "not due yet");
    clock.advance(Duration::from_secs(29));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "still not due");
    clock.advance(delay);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let d = fake.deliveries();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].instruction_id, d[1].instruction_id);
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    app.stop().await;
}

/// Test 11 (timeouts): an accepted instruction whose outcome is overdue is
/// re-sent as a reminder with the same id, and escalated when the reminders
/// run out.
async fn overdue_outcomes_get_reminders_then_escalate(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    let mut processor = push_processor("silent", &fake.endpoint());
    processor.completion_timeout = ms(3_600_000);
    processor.max_reminders = Some(1);
    register(&app, processor).await;
    let req = submit(&app, deletion("judy@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();

    app.dispatcher.run_once().await.unwrap();
    assert_eq!(
        wait_for_state(&app, &id, pb::InstructionState::Acknowledged)
            .await
            .attempts,
        1
    );
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        app.dispatcher.run_once().await.unwrap(),
        0,
        "not overdue yet"
    );

    clock.advance(Duration::from_secs(2));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "reminder sent");
    let d = fake.deliveries();
    assert_eq!(d.len(), 2);
    assert!(!d[0].reminder && d[1].reminder);
    assert_eq!(d[0].instruction_id, d[1].instruction_id);
    let reminded = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert_eq!(reminded.reminders, 1);

    clock.advance(Duration::from_secs(3601));
    assert_eq!(
        app.dispatcher.run_once().await.unwrap(),
        0,
        "no reminders left"
    );
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.reminders, 1);
    assert_eq!(fake.deliveries().len(), 2);
    app.stop().await;
}

/// A processor acknowledging one instruction several times at once (a
/// retry while the first call is in flight): every call answers
/// ACKNOWLEDGED, and the history records one acknowledgement.
async fn acknowledgements_at_once_record_one(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let token = register(&app, pull_processor("mainframe", 60_000)).await;
    let req = submit(&app, deletion("hasty@example.com")).await;
    let pulled = pull(&app, &token, 10).await;
    let ack = || {
        let mut client = app.instructions.clone();
        let asked = pb::AcknowledgeInstructionRequest {
            instruction_id: pulled[0].instruction_id.clone(),
        };
        let token = token.clone();
        async move { client.acknowledge_instruction(authed(&token, asked)).await }
    };
    let answers = futures::future::join_all((0..8).map(|_| ack())).await;
    for answer in answers {
        assert_eq!(
            answer.unwrap().into_inner().state(),
            pb::InstructionState::Acknowledged
        );
    }
    let check = verify_trail(&app, &req.request_id).await;
    assert_eq!(
        check.events, 3,
        "received, delivering, acknowledged: {check:?}"
    );
    app.stop().await;
}
