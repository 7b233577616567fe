//! The dispatcher's claims in two steps on PostgreSQL: the leases commit
//! first, and the claims' events and request bumps are written in a
//! second transaction, outside the processors' claim locks. A claim whose
//! history waits for a request row does not hold up the next pass; a
//! lease cancelled between the two, claimed again by someone else, or
//! whose history comes too late, is neither written nor sent; and leases
//! whose history was never written (the replica died between the two)
//! are delivered once they expire, with a gap-free, intact trail. A
//! history cut off before its commit is written again, once. An
//! instruction whose delivery budget went on leases never sent escalates
//! without a first delivery time, unless its request's history does not
//! read. SQLite writes both in one transaction.

use std::time::Duration;

use tonic::Code;

use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::domain::ProcessorId;
use dsr_orchestrator::pb;
use dsr_orchestrator::store::Leased;

use crate::harness::*;
use crate::postgres_only;

postgres_only!(
    a_claim_whose_history_waits_does_not_hold_up_the_next,
    a_lease_cancelled_before_its_history_is_neither_written_nor_sent,
    a_lease_cancelled_after_its_history_keeps_its_delivery_and_notice,
    a_retry_cancelled_before_its_history_keeps_the_first_delivery,
    a_lease_lost_before_its_history_is_neither_written_nor_sent,
    leases_whose_history_was_never_written_are_delivered_when_they_expire,
    a_history_cut_off_before_its_commit_is_written_again,
    a_budget_spent_on_leases_never_sent_escalates_without_a_delivery_time,
    a_lease_never_sent_escalated_by_its_clock_loses_its_delivery_time,
    a_budget_spent_after_a_sent_lease_keeps_the_first_delivery_time,
    a_history_that_does_not_read_leaves_only_its_own_request_unknown,
);

/// The instruction states `events` show, in order.
fn states(events: &[pb::RequestEvent]) -> Vec<pb::InstructionState> {
    events
        .iter()
        .filter_map(|e| e.instruction.as_ref())
        .map(|i| i.state())
        .collect()
}

/// Every event of `id` in order, numbered from one without a gap, over an
/// intact trail.
async fn intact_history(app: &TestApp, id: &str) -> Vec<pb::RequestEvent> {
    let events = watch_to_end(&app.requests, id).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let check = verify_trail(app, id).await;
    assert!(check.intact && check.record_checked, "{check:?}");
    events
}

/// A server whose dispatcher runs by hand on a manual clock, and the push
/// processor `vendor`, answering every delivery COMPLETED.
async fn with_vendor(db: &TestDb) -> (TestApp, ManualClock, FakeProcessor) {
    with_vendor_allowing(db, 4).await
}

/// [`with_vendor`], with `attempts` deliveries allowed before an
/// instruction escalates.
async fn with_vendor_allowing(db: &TestDb, attempts: u32) -> (TestApp, ManualClock, FakeProcessor) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let mut vendor = push_processor("vendor", &fake.endpoint());
    vendor.retry_policy.as_mut().unwrap().max_attempts = attempts;
    register(&app, vendor).await;
    (app, clock, fake)
}

/// Leases the due instructions of `vendor` as replica `owner` would, for
/// a minute, leaving their history unwritten.
async fn lease(app: &TestApp, clock: &ManualClock, owner: &str) -> Leased {
    let vendor = ProcessorId::parse("vendor").unwrap();
    let order = claim_order(&vendor, 5);
    let leased = app
        .store
        .lease_many(&[order], owner, clock.now())
        .await
        .unwrap();
    assert!(!leased.is_written(), "PostgreSQL leases first");
    leased
}

/// The error of an escalation whose leases were never sent.
const NEVER_SENT: &str = "its leases ended before any delivery was sent";

/// The error of an escalation with a budget of `n` attempts spent.
fn spent(n: u32) -> String {
    let attempts = if n == 1 { "attempt" } else { "attempts" };
    format!("delivery budget of {n} {attempts} spent; the last one ended without an answer")
}

/// The first delivery time (seconds) and error of request `id`'s one
/// instruction, which must have escalated.
async fn escalated(app: &TestApp, id: &str) -> (Option<i64>, String) {
    let summary = get_request(app, id).await.instructions[0].clone();
    assert_eq!(summary.state(), pb::InstructionState::Escalated);
    (
        summary.first_instructed_at.map(|t| t.seconds),
        summary.last_error,
    )
}

/// Leases `n` due instructions of `vendor` as a replica that dies before
/// it writes their history or sends them.
async fn lease_and_die(app: &TestApp, clock: &ManualClock, n: usize) {
    let dead = lease(app, clock, "dead-replica").await;
    assert_eq!(dead.claims[0].len(), n);
}

/// Writes the history of `leased` now, well inside its lease margin.
async fn write_history(app: &TestApp, clock: &ManualClock, leased: &mut Leased) {
    let now = clock.now();
    app.store
        .write_claim_history(leased, now, now + Duration::from_secs(30))
        .await
        .unwrap();
    assert!(leased.is_written());
}

/// With the first request's row locked by another session, the first
/// pass's history waits for it; the next pass leases the second request,
/// writes its history and delivers it meanwhile. In one transaction the
/// first claim would wait holding the processor's claim lock and every
/// slot it reserved, and the second pass would find no room (another
/// replica would wait for the lock).
async fn a_claim_whose_history_waits_does_not_hold_up_the_next(db: TestDb) {
    let (app, _clock, fake) = with_vendor(&db).await;
    let first = submit(&app, deletion("first@example.com")).await.request_id;
    let (mut holder, pid) = db.hold_request(&first).await;
    let waiting = {
        let dispatcher = app.dispatcher.clone();
        tokio::spawn(async move { dispatcher.run_once().await })
    };
    assert!(
        db.someone_waits_for(pid).await,
        "the first claim's history waits for the request row"
    );

    let second = submit(&app, deletion("second@example.com"))
        .await
        .request_id;
    let claimed = tokio::time::timeout(Duration::from_secs(10), app.dispatcher.run_once())
        .await
        .expect("the next pass is not held up by the waiting history")
        .unwrap();
    assert_eq!(claimed, 1);
    let delivered: Vec<String> = fake
        .deliveries()
        .into_iter()
        .map(|d| d.request_id)
        .collect();
    assert_eq!(delivered, [second.as_str()], "the first is not sent yet");
    assert_eq!(
        record(&app, &second).await.outcome(),
        pb::OverallOutcome::Fulfilled
    );
    assert!(!waiting.is_finished(), "the first history still waits");

    sqlx::raw_sql("rollback")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(fake.deliveries().len(), 2);
    for id in [&first, &second] {
        let events = intact_history(&app, id).await;
        assert_eq!(
            states(&events),
            [
                pb::InstructionState::Delivering,
                pb::InstructionState::Completed
            ]
        );
    }
    app.stop().await;
}

/// A request cancelled after its instruction was leased and before the
/// lease's history was written: the history step finds the lease ended
/// and keeps nothing to send; the trail shows the cancel (with the
/// attempt) and no DELIVERING event. Nothing was sent, so the record shows
/// no first delivery and the processor gets no cancel notice.
async fn a_lease_cancelled_before_its_history_is_neither_written_nor_sent(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    let id = submit(&app, deletion("gone@example.com")).await.request_id;
    let mut leased = lease(&app, &clock, "replica-a").await;
    assert_eq!(leased.claims[0].len(), 1);

    cancel(&app, &id, "withdrawn").await;
    write_history(&app, &clock, &mut leased).await;
    assert!(leased.claims[0].is_empty(), "nothing left to send");

    let events = intact_history(&app, &id).await;
    let changes: Vec<_> = events
        .iter()
        .filter_map(|e| e.instruction.as_ref())
        .collect();
    assert_eq!(changes.len(), 1, "no DELIVERING event: {changes:?}");
    assert_eq!(changes[0].state(), pb::InstructionState::Cancelled);
    assert_eq!(changes[0].attempts, 1);
    let record = record(&app, &id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Cancelled);
    assert_eq!(record.lines[0].first_instructed_at, None);
    assert_eq!(changes[0].first_instructed_at, None);
    let notices = db
        .texts("select cast(count(*) as text) from cancel_notices")
        .await;
    assert_eq!(notices[0][0].as_deref(), Some("0"));
    assert!(fake.deliveries().is_empty());
    app.stop().await;
}

/// A request cancelled while a retry is leased but its history not yet
/// written: the retry is not sent, but the first attempt was, so the
/// record keeps that attempt's delivery time and the processor's cancel
/// notice is queued.
async fn a_retry_cancelled_before_its_history_keeps_the_first_delivery(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    fake.script([Reply::Error(Code::Unavailable)]);
    let id = submit(&app, deletion("gone@example.com")).await.request_id;
    let first_sent_at = clock.now();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    clock.advance(Duration::from_secs(3600));
    let mut retry = lease(&app, &clock, "replica-a").await;
    assert_eq!(retry.claims[0][0].attempt(), 2);

    cancel(&app, &id, "withdrawn").await;
    write_history(&app, &clock, &mut retry).await;
    assert!(retry.claims[0].is_empty(), "the retry is not sent");

    let events = intact_history(&app, &id).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Pending,
            pb::InstructionState::Cancelled
        ]
    );
    let record = record(&app, &id).await;
    let first = record.lines[0]
        .first_instructed_at
        .expect("the first attempt's");
    assert_eq!(first.seconds, first_sent_at.timestamp());
    let notices = db
        .texts("select cast(count(*) as text) from cancel_notices")
        .await;
    assert_eq!(notices[0][0].as_deref(), Some("1"));
    assert_eq!(fake.deliveries().len(), 1, "the first attempt only");
    app.stop().await;
}

/// A request cancelled once a lease's history is written: the delivery
/// may have started, so the record keeps its first delivery time and the
/// processor's cancel notice is queued.
async fn a_lease_cancelled_after_its_history_keeps_its_delivery_and_notice(db: TestDb) {
    let (app, clock, _fake) = with_vendor(&db).await;
    let id = submit(&app, deletion("gone@example.com")).await.request_id;
    let mut leased = lease(&app, &clock, "replica-a").await;
    write_history(&app, &clock, &mut leased).await;
    assert_eq!(leased.claims[0].len(), 1, "the lease is sent");

    cancel(&app, &id, "withdrawn").await;

    let events = intact_history(&app, &id).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Cancelled
        ]
    );
    let record = record(&app, &id).await;
    assert!(record.lines[0].first_instructed_at.is_some());
    let notices = db
        .texts("select cast(count(*) as text) from cancel_notices")
        .await;
    assert_eq!(notices[0][0].as_deref(), Some("1"));
    app.stop().await;
}

/// A lease claimed again by another replica before its history was
/// written, and one whose history comes after the lease margin, are
/// neither written nor sent; the second expires and is delivered again.
async fn a_lease_lost_before_its_history_is_neither_written_nor_sent(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    let taken = submit(&app, deletion("taken@example.com")).await.request_id;
    let mut stale = lease(&app, &clock, "replica-a").await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "claimed again");
    write_history(&app, &clock, &mut stale).await;
    assert!(stale.claims[0].is_empty(), "lost to the new claim");
    let events = intact_history(&app, &taken).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Completed
        ],
        "the new claim's events only"
    );

    let late = submit(&app, deletion("late@example.com")).await.request_id;
    let leased_at = clock.now();
    let mut slow = lease(&app, &clock, "replica-b").await;
    let margin = Duration::from_secs(30);
    clock.advance(margin + Duration::from_secs(1));
    app.store
        .write_claim_history(&mut slow, clock.now(), leased_at + margin)
        .await
        .unwrap();
    assert!(slow.claims[0].is_empty(), "too late to send");
    assert_eq!(verify_trail(&app, &late).await.events, 1, "its receipt");
    clock.advance(Duration::from_secs(30));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "expired");
    let events = intact_history(&app, &late).await;
    assert_eq!(states(&events)[0], pb::InstructionState::Delivering);
    assert_eq!(fake.deliveries().len(), 2, "one each, by the dispatcher");
    app.stop().await;
}

/// A replica that leased and died before writing the history: the request
/// still reads RECEIVED and its trail holds its receipt alone; once the
/// lease expires the instruction is delivered again (attempt 2, the first
/// closed as expired, its time the first delivery's) and the request
/// completes over an intact trail.
async fn leases_whose_history_was_never_written_are_delivered_when_they_expire(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    let id = submit(&app, deletion("orphan@example.com"))
        .await
        .request_id;
    lease_and_die(&app, &clock, 1).await;
    assert_eq!(verify_trail(&app, &id).await.events, 1, "its receipt alone");
    assert_eq!(
        get_request(&app, &id).await.status(),
        pb::RequestStatus::Received
    );
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "still leased");
    clock.advance(Duration::from_secs(61));
    let delivered_at = clock.now();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(fake.deliveries().len(), 1);

    let events = intact_history(&app, &id).await;
    assert_eq!(
        states(&events),
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Completed
        ]
    );
    // The first delivery is the one that happened, not the dead lease.
    let delivering = events.iter().find_map(|e| e.instruction.as_ref()).unwrap();
    let first = delivering.first_instructed_at;
    assert_eq!(first.map(|t| t.seconds), Some(delivered_at.timestamp()));
    let line = &record(&app, &id).await.lines[0];
    assert_eq!(line.attempts, 2);
    assert_eq!(
        line.first_instructed_at.map(|t| (t.seconds, t.nanos)),
        first.map(|t| (t.seconds, t.nanos))
    );
    let listed = all_instructions(&app).await;
    let results: Vec<&str> = listed[0]
        .history
        .iter()
        .map(|a| a.result.as_str())
        .collect();
    assert_eq!(results, ["lease_expired", "outcome"]);
    app.stop().await;
}

/// A history step whose connection is ended while it waits for a request
/// row (a transient failure before its commit) tries again on another
/// connection, and once the row is free writes the lease's DELIVERING
/// event, once, and keeps the lease to send.
async fn a_history_cut_off_before_its_commit_is_written_again(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    let id = submit(&app, deletion("retried@example.com"))
        .await
        .request_id;
    let leased = lease(&app, &clock, "replica-a").await;
    let (mut holder, pid) = db.hold_request(&id).await;
    let writing = {
        let (store, now) = (app.store.clone(), clock.now());
        tokio::spawn(async move {
            let mut leased = leased;
            store
                .write_claim_history(&mut leased, now, now + Duration::from_secs(30))
                .await
                .map(|()| leased)
        })
    };
    assert!(db.someone_waits_for(pid).await, "the history waits");
    let waiting = db
        .texts(&format!(
            "select cast(pid as text) from pg_stat_activity \
             where {pid} = any(pg_blocking_pids(pid))"
        ))
        .await;
    assert_eq!(waiting.len(), 1, "one history waits: {waiting:?}");
    let waiter = waiting[0][0].as_deref().unwrap();
    let ended = db
        .texts(&format!(
            "select cast(pg_terminate_backend({waiter}, 10000) as text)"
        ))
        .await;
    assert_eq!(ended, [[Some("true".to_string())]], "its connection ended");
    assert!(
        db.someone_waits_for(pid).await,
        "tried again, it waits again"
    );
    assert!(!writing.is_finished());

    sqlx::raw_sql("rollback")
        .execute(&mut holder)
        .await
        .unwrap();
    let leased = writing.await.unwrap().expect("written on the second try");
    assert!(leased.is_written());
    assert_eq!(leased.claims[0].len(), 1, "still held, to send");
    let check = verify_trail(&app, &id).await;
    assert!(check.intact, "{check:?}");
    assert_eq!(check.events, 2, "its receipt and one DELIVERING event");
    assert!(
        fake.deliveries().is_empty(),
        "the dispatcher sends, not this"
    );
    app.stop().await;
}

/// One delivery allowed, and two leases expired unanswered: one whose
/// history a dead replica never wrote, one whose history was written (its
/// delivery may have begun). Both escalate with the budget spent; the
/// first was never sent, so it keeps no first delivery time and its error
/// says why, while the second keeps its lease's time. Both trails stay
/// intact.
async fn a_budget_spent_on_leases_never_sent_escalates_without_a_delivery_time(db: TestDb) {
    let (app, clock, fake) = with_vendor_allowing(&db, 1).await;
    let unsent = submit(&app, deletion("unsent@example.com"))
        .await
        .request_id;
    lease_and_die(&app, &clock, 1).await;
    let sent = submit(&app, deletion("sent@example.com")).await.request_id;
    let leased_at = clock.now();
    let mut written = lease(&app, &clock, "live-replica").await;
    assert_eq!(written.claims[0].len(), 1);
    write_history(&app, &clock, &mut written).await;

    clock.advance(Duration::from_secs(61));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    assert!(fake.deliveries().is_empty(), "nothing is delivered again");
    assert_eq!(
        escalated(&app, &unsent).await,
        (None, NEVER_SENT.to_string())
    );
    assert_eq!(
        escalated(&app, &sent).await,
        (Some(leased_at.timestamp()), spent(1))
    );
    // Received and escalated; received, delivering and escalated.
    for (id, events) in [(&unsent, 2), (&sent, 3)] {
        let check = verify_trail(&app, id).await;
        assert!(check.intact, "{check:?}");
        assert_eq!(check.events, events);
    }
    app.stop().await;
}

/// A lease a dead replica never sent, still unredelivered when the
/// instruction's escalation time comes: it escalates by the clock with
/// that error, and keeps no first delivery time (a re-armed instruction
/// would otherwise carry the dead lease's time into its record).
async fn a_lease_never_sent_escalated_by_its_clock_loses_its_delivery_time(db: TestDb) {
    let (app, clock, fake) = with_vendor(&db).await;
    let id = submit(&app, deletion("late@example.com")).await.request_id;
    let escalate_at = get_request(&app, &id).await.instructions[0]
        .escalate_at
        .expect("an escalation time");
    lease_and_die(&app, &clock, 1).await;
    let wait = escalate_at.seconds - clock.now().timestamp() + 1;
    clock.advance(Duration::from_secs(wait as u64));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    assert!(fake.deliveries().is_empty());
    let summary = get_request(&app, &id).await.instructions[0].clone();
    assert_eq!(summary.state(), pb::InstructionState::Escalated);
    assert_eq!(summary.first_instructed_at, None);
    assert!(
        summary
            .last_error
            .starts_with("not answered by its due time"),
        "{}",
        summary.last_error
    );
    assert!(verify_trail(&app, &id).await.intact);
    app.stop().await;
}

/// Two deliveries allowed: the first lease's history written (its
/// delivery may have begun), the redelivery's never. With the budget
/// spent the instruction escalates keeping the first lease's time: a
/// delivery was sent then.
async fn a_budget_spent_after_a_sent_lease_keeps_the_first_delivery_time(db: TestDb) {
    let (app, clock, fake) = with_vendor_allowing(&db, 2).await;
    let id = submit(&app, deletion("twice@example.com")).await.request_id;
    let first_at = clock.now();
    let mut first = lease(&app, &clock, "live-replica").await;
    write_history(&app, &clock, &mut first).await;
    clock.advance(Duration::from_secs(61));
    // The expired lease, leased again.
    lease_and_die(&app, &clock, 1).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    assert!(fake.deliveries().is_empty());
    assert_eq!(
        escalated(&app, &id).await,
        (Some(first_at.timestamp()), spent(2))
    );
    assert!(verify_trail(&app, &id).await.intact);
    app.stop().await;
}

/// Two leases a dead replica never sent, of two requests, escalate
/// together with the budget spent; one request has an event whose body
/// does not read. Which of its instructions were sent is not known, so its
/// instruction keeps its time and the budget's error; the other request's
/// history still says its lease was never sent.
async fn a_history_that_does_not_read_leaves_only_its_own_request_unknown(db: TestDb) {
    let (app, clock, _fake) = with_vendor_allowing(&db, 1).await;
    let readable = submit(&app, deletion("readable@example.com")).await;
    let garbled = submit(&app, deletion("garbled@example.com")).await;
    let leased_at = clock.now();
    lease_and_die(&app, &clock, 2).await;
    db.execute(&format!(
        "update request_events set body = '{{\"DELIVERING\"' where request_id = '{}'",
        garbled.request_id
    ))
    .await;

    clock.advance(Duration::from_secs(61));
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(
        escalated(&app, &readable.request_id).await,
        (None, NEVER_SENT.to_string())
    );
    assert_eq!(
        escalated(&app, &garbled.request_id).await,
        (Some(leased_at.timestamp()), spent(1))
    );
    app.stop().await;
}
