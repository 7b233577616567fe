//! No work left silent: every adapter's instructions escalate by their
//! due times, before the request's deadline. A CCPA request made on
//! 1 January 2026 is due at the end of 15 February; with the default
//! safety margin of 7 days its instructions are due at the end of
//! 8 February and escalate halfway from there, at noon on the 12th.

use std::time::Duration;

use dsr_orchestrator::pb;

use super::*;
use crate::backends;

backends!(
    a_late_push_processor_is_reminded_then_escalated_before_the_deadline,
    an_unpulled_instruction_escalates_at_its_time,
    a_pull_lease_taken_again_and_again_escalates,
    an_unresolved_manual_instruction_escalates_at_its_time,
    a_request_late_on_arrival_still_reaches_its_processors,
);

const START: &str = "2026-01-01T00:00:00Z";

/// Moves `clock` to `t`.
fn move_to(clock: &dsr_orchestrator::clock::ManualClock, t: &str) {
    use dsr_orchestrator::clock::Clock;
    let by = at(t) - clock.now();
    clock.advance(by.to_std().expect("forward"));
}

/// A push processor that accepts and then stays silent, with a completion
/// timeout longer than the time left: its outcome falls due at its due
/// time instead, it is reminded then, and escalates at noon on the 12th,
/// three and a half days before the request's deadline.
async fn a_late_push_processor_is_reminded_then_escalated_before_the_deadline(db: TestDb) {
    let (app, clock, fake, req) =
        accepting_processor(&db, START, "slow-vendor", 30, Some(5), "hal@example.com").await;
    let id = req.instructions[0].instruction_id.clone();

    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    // The timeout's reminder (31 January) comes first.
    move_to(&clock, "2026-01-31T00:00:01Z");
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "reminded");
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    // The next would be a month on; the due time comes first.
    move_to(&clock, "2026-02-08T23:59:00Z");
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "not yet due");
    move_to(&clock, "2026-02-09T00:00:00Z");
    assert_eq!(
        app.dispatcher.run_once().await.unwrap(),
        1,
        "reminded when late"
    );
    let reminded = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert_eq!(reminded.reminders, 2);
    assert!(fake.deliveries().iter().skip(1).all(|d| d.reminder));

    move_to(&clock, "2026-02-12T11:59:00Z");
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(
        get_request(&app, &req.request_id).await.instructions[0].state(),
        pb::InstructionState::Acknowledged,
        "not yet"
    );
    move_to(&clock, "2026-02-12T12:00:00Z");
    app.dispatcher.run_once().await.unwrap();
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert!(
        escalated
            .summary
            .as_ref()
            .unwrap()
            .last_error
            .contains("due time"),
        "{escalated:?}"
    );
    let r = get_request(&app, &req.request_id).await;
    assert!(
        r.needs_attention && !r.overdue,
        "escalated before the deadline"
    );
    assert_eq!(
        fake.deliveries().len(),
        3,
        "no reminder after the escalation"
    );
    app.stop().await;
}

/// A pull processor that never pulls: its instruction escalates at its
/// time all the same.
async fn an_unpulled_instruction_escalates_at_its_time(db: TestDb) {
    let (app, clock) = spawn_at(&db, START, |_| {}).await;
    register(&app, pull_processor("mainframe", 60_000)).await;
    let req = submit(&app, deletion("ike@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    assert_eq!(
        time(&req.instructions[0].escalate_at),
        at("2026-02-12T11:59:59.999999Z")
    );

    move_to(&clock, "2026-02-12T11:59:00Z");
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(
        get_request(&app, &req.request_id).await.instructions[0].state(),
        pb::InstructionState::Pending
    );
    move_to(&clock, "2026-02-12T12:00:00Z");
    app.dispatcher.run_once().await.unwrap();
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.attempts, 0, "never pulled");
    // An operator's re-arm hands it back without the clock taking it
    // again at once.
    rearm(&app, &id).await;
    app.dispatcher.run_once().await.unwrap();
    let rearmed = get_request(&app, &req.request_id).await;
    assert_eq!(
        rearmed.instructions[0].state(),
        pb::InstructionState::Pending
    );
    assert_eq!(rearmed.instructions[0].escalate_at, None);
    app.stop().await;
}

/// A pull processor that pulls and never answers: each expired lease is
/// offered again while its `max_attempts` last, and then the instruction
/// escalates instead of being offered once more.
async fn a_pull_lease_taken_again_and_again_escalates(db: TestDb) {
    let (app, clock) = spawn_at(&db, START, |_| {}).await;
    let mut processor = pull_processor("forgetful", 60_000);
    processor.retry_policy.as_mut().unwrap().max_attempts = 3;
    let token = register(&app, processor).await;
    let req = submit(&app, deletion("jo@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();

    for attempt in 1..=3 {
        let pulled = pull(&app, &token, 10).await;
        assert_eq!(pulled.len(), 1, "pull {attempt}");
        assert_eq!(pulled[0].attempts, attempt);
        clock.advance(Duration::from_secs(61));
    }
    assert!(pull(&app, &token, 10).await.is_empty(), "budget spent");
    app.dispatcher.run_once().await.unwrap();
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.attempts, 3);
    assert!(
        escalated
            .summary
            .as_ref()
            .unwrap()
            .last_error
            .contains("delivery budget of 3 attempts spent"),
        "{escalated:?}"
    );
    let history = &escalated.history;
    assert_eq!(history.len(), 3);
    assert!(
        history.iter().all(|a| a.result == "lease_expired"),
        "{history:?}"
    );
    app.stop().await;
}

/// A manual instruction no operator resolves escalates at its time; an
/// operator can still resolve it then.
async fn an_unresolved_manual_instruction_escalates_at_its_time(db: TestDb) {
    let (app, clock) = spawn_at(&db, START, |_| {}).await;
    register(&app, manual_processor("records-desk")).await;
    let req = submit(&app, deletion("kim@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();

    move_to(&clock, "2026-02-12T11:59:00Z");
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(
        get_request(&app, &req.request_id).await.instructions[0].state(),
        pb::InstructionState::Pending
    );
    move_to(&clock, "2026-02-12T12:00:00Z");
    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert!(get_request(&app, &req.request_id).await.needs_attention);

    app.instructions
        .clone()
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: id,
            result: result(pb::Outcome::Completed),
            note: "deleted by the records desk, ticket RD-12".into(),
        })
        .await
        .unwrap();
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    assert!(record.on_time);
    app.stop().await;
}

/// A request taken in after its deadline (made 60 days earlier) is
/// overdue from the start, yet its instructions still go out: they
/// escalate only once their processors have had their `ack_timeout` to
/// take them up.
async fn a_request_late_on_arrival_still_reaches_its_processors(db: TestDb) {
    let (app, clock) = spawn_at(&db, "2026-03-02T09:00:00Z", |_| {}).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let mut late = deletion("yul@example.com");
    late.submitted_at = Some(ts("2026-01-01T09:00:00Z"));
    let req = submit(&app, late).await;
    assert!(req.overdue);
    let line = &req.instructions[0];
    assert_eq!(time(&line.escalate_at), at("2026-03-02T09:05:00Z"));

    app.dispatcher.run_once().await.unwrap();
    let id = line.instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert_eq!(
        fake.deliveries().len(),
        1,
        "delivered before any escalation"
    );
    clock.advance(Duration::from_secs(5 * 60));
    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    app.stop().await;
}
