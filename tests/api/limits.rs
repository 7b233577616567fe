//! Dispatcher bounds and error classification, one pass at a time.

use std::sync::Arc;
use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::dispatch::{HELD_SLOTS, QUEUING_SUBMISSIONS};
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    concurrency_is_bounded_per_processor_and_overall,
    scarce_slots_reach_every_processor_in_turn,
    slots_are_shared_evenly_and_requests_claimed_whole,
    processors_with_unequal_room_claim_the_same_requests,
    a_processor_with_little_room_holds_no_one_back,
    a_processor_that_fell_behind_catches_up_without_splitting,
    a_processor_far_behind_is_not_waited_for,
    deliveries_yield_to_queuing_submissions_until_late,
    deliveries_never_yield_with_intake_priority_off,
    held_deliveries_keep_at_most_held_slots,
    deliveries_waiting_for_answers_are_not_held,
    non_retryable_errors_escalate_at_once,
    slots_waiting_for_answers_do_not_delay_a_refill,
    a_pull_processors_expired_lease_does_not_end_the_hold,
    held_passes_go_on_as_their_calls_start,
    a_lower_max_in_flight_counts_the_deliveries_already_in_flight
);

fn one_pass_at_a_time() -> Options {
    manual_passes().0
}

/// Options for an app whose passes are run by hand, on a manual clock, and
/// the clock.
fn manual_passes() -> (Options, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let options = Options {
        clock: clock.clone(),
        run_dispatcher: false,
        ..Options::default()
    };
    (options, clock)
}

/// Gives push processor `id` (answered by `fake`) a `max_in_flight` of
/// `limit`.
async fn set_max_in_flight(app: &TestApp, id: &str, fake: &FakeProcessor, limit: u32) {
    let mut spec = push_processor(id, &fake.endpoint());
    spec.max_in_flight = limit;
    app.processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(spec),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["max_in_flight".into()],
            }),
        })
        .await
        .unwrap();
}

/// A pass claims no more than a processor's `max_in_flight`, and no more
/// than `--max-in-flight` across processors.
async fn concurrency_is_bounded_per_processor_and_overall(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 3).await;
    let a = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let b = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let mut narrow = push_processor("narrow", &a.endpoint());
    narrow.max_in_flight = 2;
    register(&app, narrow).await;
    register(&app, push_processor("wide", &b.endpoint())).await;
    for n in 0..5 {
        submit(&app, deletion(&format!("u{n}@example.com"))).await;
    }
    // 10 due instructions; 3 slots overall, at most 2 of them for "narrow".
    let mut per_pass = Vec::new();
    loop {
        let before = (a.deliveries().len(), b.deliveries().len());
        let n = app.dispatcher.run_once().await.unwrap();
        if n == 0 {
            break;
        }
        let narrow_now = a.deliveries().len() - before.0;
        assert!(narrow_now <= 2, "narrow got {narrow_now} in one pass");
        per_pass.push(n);
    }
    assert!(per_pass.iter().all(|&n| n <= 3), "{per_pass:?}");
    assert_eq!(per_pass.iter().sum::<usize>(), 10);
    assert_eq!((a.deliveries().len(), b.deliveries().len()), (5, 5));
    app.stop().await;
}

/// Push processors `pa`, `pb` and `pc`, each completing at once.
async fn three_completing_processors(app: &TestApp) -> Vec<FakeProcessor> {
    push_processors(
        app,
        &["pa", "pb", "pc"],
        Reply::done(pb::Outcome::Completed),
    )
    .await
}

/// With fewer free slots than processors, the processors that go without
/// in one pass go first in the next: none waits until the others have no
/// work left.
async fn scarce_slots_reach_every_processor_in_turn(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 2).await;
    let fakes = three_completing_processors(&app).await;
    for n in 0..6 {
        submit(&app, deletion(&format!("u{n}@example.com"))).await;
    }
    // 18 due instructions, 2 slots: a pass gives one each to two of three.
    for _ in 0..3 {
        assert_eq!(app.dispatcher.run_once().await.unwrap(), 2);
    }
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(
        delivered,
        [2, 2, 2],
        "three passes, each processor left out once"
    );
    app.stop().await;
}

/// Free slots not divisible among the processors: each gets the same
/// share and the remainder waits, so a request fanned out to all of them
/// is claimed whole, in one pass, rather than split across two.
async fn slots_are_shared_evenly_and_requests_claimed_whole(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 8).await;
    let fakes = three_completing_processors(&app).await;
    let mut requests = Vec::new();
    for n in 0..4 {
        requests.push(submit(&app, deletion(&format!("w{n}@example.com"))).await);
    }
    // 12 due instructions, 8 slots: two each, the other two wait.
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 6);
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(delivered, [2, 2, 2]);
    // The first two requests, whole: every instruction of theirs was
    // delivered, none of the other two's.
    let mut first_two = 0;
    for done in completed_per_request(&app, &requests).await {
        assert!(
            done == 0 || done == 3,
            "request split across passes: {done} of 3"
        );
        first_two += usize::from(done == 3);
    }
    assert_eq!(first_two, 2);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 6);
    app.stop().await;
}

/// Push processors, each completing at once and registered with the
/// given `max_in_flight`.
async fn limited_processors(app: &TestApp, limits: &[(&str, u32)]) -> Vec<FakeProcessor> {
    let mut fakes = Vec::new();
    for (id, limit) in limits {
        let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        let mut spec = push_processor(id, &fake.endpoint());
        spec.max_in_flight = *limit;
        register(app, spec).await;
        fakes.push(fake);
    }
    fakes
}

/// How many instructions of each of `requests` are completed.
async fn completed_per_request(app: &TestApp, requests: &[pb::DataSubjectRequest]) -> Vec<usize> {
    let mut done = Vec::new();
    for r in requests {
        let got = get_request(app, &r.request_id).await;
        done.push(
            got.instructions
                .iter()
                .filter(|i| i.state() == pb::InstructionState::Completed)
                .count(),
        );
    }
    done
}

/// Runs passes `from..` and checks after each that it split no request
/// (each has none or all `processors` of its instructions completed) and
/// that the requests completed whole so far are the next of `whole`.
async fn passes_take_whole_requests(
    app: &TestApp,
    requests: &[pb::DataSubjectRequest],
    processors: usize,
    from: usize,
    whole: &[usize],
) {
    for (pass, whole) in (from..).zip(whole) {
        app.dispatcher.run_once().await.unwrap();
        let done = completed_per_request(app, requests).await;
        assert!(
            done.iter().all(|&d| d == 0 || d == processors),
            "pass {pass} split a request: {done:?}"
        );
        let complete = done.iter().filter(|&&d| d == processors).count();
        assert_eq!(complete, *whole, "{done:?}");
    }
}

/// Processors whose room differs a little (limits 4, 4 and 3) each claim
/// as much as the one with the least, so every pass takes whole requests:
/// were the first two to take a fourth, its third instruction would go
/// out in the next pass, and from then on every pass would split one.
async fn processors_with_unequal_room_claim_the_same_requests(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 100).await;
    let fakes = limited_processors(&app, &[("pa", 4), ("pb", 4), ("pc", 3)]).await;
    let mut requests = Vec::new();
    for n in 0..8 {
        requests.push(submit(&app, deletion(&format!("e{n}@example.com"))).await);
    }
    passes_take_whole_requests(&app, &requests, 3, 1, &[3, 6, 8]).await;
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(delivered, [8, 8, 8]);
    app.stop().await;
}

/// Processors with much less room than the others (limits of 1 against
/// 4), however many of them, take what they have, and the others are not
/// held to it.
async fn a_processor_with_little_room_holds_no_one_back(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 100).await;
    let limits = [("pa", 4), ("slow", 1), ("slower", 1), ("slowest", 1)];
    let fakes = limited_processors(&app, &limits).await;
    for n in 0..8 {
        submit(&app, deletion(&format!("s{n}@example.com"))).await;
    }
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 7);
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(delivered, [4, 1, 1, 1]);
    app.stop().await;
}

/// A processor that fell behind the others while it had little room
/// catches up once it has as much as they do: the pass that evens them
/// leases the others' requests only as far as the one behind reached, and
/// every request goes out whole, none split between passes.
async fn a_processor_that_fell_behind_catches_up_without_splitting(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 100).await;
    let fakes = limited_processors(&app, &[("pa", 4), ("pb", 1)]).await;
    let mut requests = Vec::new();
    for n in 0..12 {
        requests.push(submit(&app, deletion(&format!("b{n}@example.com"))).await);
    }
    // Room for 4 and for 1: pb is left three requests behind.
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 5);
    let done = completed_per_request(&app, &requests).await;
    assert_eq!(done.iter().filter(|&&d| d == 1).count(), 3, "{done:?}");
    set_max_in_flight(&app, "pb", &fakes[1], 4).await;
    // pb leases the three it is behind and one more; pa that one only.
    passes_take_whole_requests(&app, &requests, 2, 2, &[5, 9, 12]).await;
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(delivered, [12, 12]);
    app.stop().await;
}

/// A processor further behind than a pass takes (the first pick of the
/// others is due after its last) is not waited for: the others lease
/// their own picks while it works through its older ones.
async fn a_processor_far_behind_is_not_waited_for(db: TestDb) {
    let (options, clock) = manual_passes();
    let app = TestApp::spawn_with(&db, options, |c| c.max_in_flight = 100).await;
    let fakes = limited_processors(&app, &[("pa", 4), ("pb", 1)]).await;
    for n in 0..20 {
        submit(&app, deletion(&format!("f{n}@example.com"))).await;
        clock.advance(Duration::from_millis(1));
    }
    // Three passes at 4 and 1: pb is nine requests behind, more than a
    // pass of 4 takes.
    for _ in 0..3 {
        assert_eq!(app.dispatcher.run_once().await.unwrap(), 5);
    }
    set_max_in_flight(&app, "pb", &fakes[1], 4).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 8, "4 each");
    let delivered: Vec<usize> = fakes.iter().map(|f| f.deliveries().len()).collect();
    assert_eq!(delivered, [16, 7]);
    app.stop().await;
}

/// A manual clock's app, one pass at a time, with `slots` overall, and
/// `count` submitted deletions for one push processor with room for all.
async fn slots_and_a_queue(
    db: &TestDb,
    slots: usize,
    count: usize,
    tweak: impl FnOnce(&mut dsr_orchestrator::config::Config),
) -> (TestApp, Arc<ManualClock>, FakeProcessor) {
    let (options, clock) = manual_passes();
    let app = TestApp::spawn_with(db, options, |c| {
        c.max_in_flight = slots;
        tweak(c);
    })
    .await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let mut vendor = push_processor("vendor", &fake.endpoint());
    vendor.max_in_flight = count as u32;
    register(&app, vendor).await;
    for n in 0..count {
        submit(&app, deletion(&format!("q{n}@example.com"))).await;
    }
    (app, clock, fake)
}

/// While callers queue at intake, a pass fills a quarter of the slots;
/// with fewer callers, or once the oldest due work is `--intake-priority`
/// late, all of them.
async fn deliveries_yield_to_queuing_submissions_until_late(db: TestDb) {
    let (app, clock, fake) = slots_and_a_queue(&db, 16, 44, |_| {}).await;
    // Callers waiting for intake, as many as count as a queue.
    let mut queue = app.callers_queuing();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    // One fewer: no queue, every slot.
    queue.pop();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 16);
    queue.push(app.store.submission_started());
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    // The 20 left are now 30 s late: the queue no longer holds them back.
    clock.advance(Duration::from_secs(30));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 16);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    assert_eq!(fake.deliveries().len(), 44);
    let (_, text) = app.admin_get("/metrics").await;
    let yields = text
        .lines()
        .find_map(|l| l.strip_prefix("dsr_dispatch_yields_total "))
        .expect("yield counter exported");
    assert_eq!(yields.trim().parse::<f64>().unwrap(), 2.0);
    drop(queue);
    app.stop().await;
}

/// `--intake-priority 0s`: a queue at intake never holds deliveries back.
async fn deliveries_never_yield_with_intake_priority_off(db: TestDb) {
    let (app, _clock, fake) =
        slots_and_a_queue(&db, 16, 20, |c| c.intake_priority = Duration::ZERO).await;
    let _queue: Vec<_> = (0..4 * QUEUING_SUBMISSIONS)
        .map(|_| app.store.submission_started())
        .collect();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 16);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    assert_eq!(fake.deliveries().len(), 20);
    app.stop().await;
}

/// With many slots, held deliveries keep no more than `HELD_SLOTS` (a
/// quarter of 512 would be 128): a larger `--max-in-flight` speeds the
/// fan-out up without slowing bursts down.
async fn held_deliveries_keep_at_most_held_slots(db: TestDb) {
    let count = HELD_SLOTS + 16;
    let (app, _clock, fake) = slots_and_a_queue(&db, 512, count, |_| {}).await;
    let queue = app.callers_queuing();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), HELD_SLOTS);
    drop(queue);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 16);
    assert_eq!(fake.deliveries().len(), count);
    app.stop().await;
}

/// The hold counts the deliveries in the replica's own hands, not those
/// waiting for a processor's answer: while a slow processor still owes the
/// answers to one held pass's deliveries, the next pass starts as many
/// more. Its claim and the writing of its results are what compete with
/// intake, the same for a slow processor as for one answering at once.
async fn deliveries_waiting_for_answers_are_not_held(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 16).await;
    let slow = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    slow.script(vec![Reply::Hang; 8]);
    let mut vendor = patient_push_processor("slow", &slow.endpoint());
    vendor.max_in_flight = 16;
    register(&app, vendor).await;
    for n in 0..12 {
        submit(&app, deletion(&format!("w{n}@example.com"))).await;
    }
    let queue = app.callers_queuing();
    // A quarter of 16 each time, all four waiting for their answers.
    let first = app.spawn_pass();
    slow.wait_for_calls(4).await;
    let second = app.spawn_pass();
    slow.wait_for_calls(8).await;
    assert_eq!(slow.deliveries().len(), 8, "two passes of four");
    slow.release();
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (4, 4));
    drop(queue);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    assert_eq!(slow.deliveries().len(), 12);
    app.stop().await;
}

/// Codes other than UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
/// ABORTED and INTERNAL escalate after one attempt, with the error kept.
async fn non_retryable_errors_escalate_at_once(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |_| {}).await;
    let fake = FakeProcessor::start(Reply::Error(Code::PermissionDenied)).await;
    register(&app, push_processor("strict", &fake.endpoint())).await;
    let req = submit(&app, deletion("oscar@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    let i = wait_for_state(
        &app,
        &req.instructions[0].instruction_id,
        pb::InstructionState::Escalated,
    )
    .await;
    assert_eq!(i.attempts, 1);
    assert_eq!(i.history[0].result, "fatal_error");
    assert_eq!(i.history[0].error_code, "PERMISSION_DENIED");
    assert_eq!(fake.deliveries().len(), 1);
    app.stop().await;
}

/// The running dispatcher, woken by new work while few slots are free,
/// claims once a quarter of the slots not waiting for processors' answers
/// are free: with 10 of 12 slots waiting on a slow processor, that is one
/// of the two free slots, and the new work gets one at once. (A quarter of
/// all 12 would be 3, and only the poll interval, an hour here, would end
/// the wait.)
async fn slots_waiting_for_answers_do_not_delay_a_refill(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.max_in_flight = 12;
        c.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let slow = FakeProcessor::start(Reply::Hang).await;
    // Busy for the whole test: no timeout frees a slot.
    register(&app, patient_push_processor("slow", &slow.endpoint())).await;
    for n in 0..10 {
        submit(&app, deletion(&format!("s{n}@example.com"))).await;
    }
    slow.wait_for_calls(10).await;

    let quick = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("quick", &quick.endpoint())).await;
    let mut req = deletion("late@example.com");
    req.processor_ids = vec!["quick".into()];
    submit(&app, req).await;
    quick.wait_for_calls(1).await;
    assert_eq!(slow.deliveries().len(), 10, "the slow ones are still held");
    slow.release();
    app.stop().await;
}

/// The lateness that ends intake-first's hold is that of work the
/// dispatcher delivers. A pull processor that pulled and never came back
/// leaves an expired lease that only its own next pull picks up again; it
/// must not count as deliveries running late, or the hold would be off for
/// good.
async fn a_pull_processors_expired_lease_does_not_end_the_hold(db: TestDb) {
    let (options, clock) = manual_passes();
    let app = TestApp::spawn_with(&db, options, |c| c.max_in_flight = 16).await;
    let token = register(&app, pull_processor("mainframe", 1_000)).await;
    submit(&app, deletion("gone@example.com")).await;
    assert_eq!(pull(&app, &token, 10).await.len(), 1);
    // Its lease ran out a minute ago.
    clock.advance(Duration::from_secs(61));

    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let mut vendor = push_processor("vendor", &fake.endpoint());
    vendor.max_in_flight = 16;
    register(&app, vendor).await;
    for n in 0..8 {
        let mut req = deletion(&format!("v{n}@example.com"));
        req.processor_ids = vec!["vendor".into()];
        submit(&app, req).await;
    }
    let queue = app.callers_queuing();
    assert_eq!(
        app.dispatcher.run_once().await.unwrap(),
        4,
        "a quarter of 16"
    );
    drop(queue);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 4);
    assert_eq!(fake.deliveries().len(), 8);
    app.stop().await;
}

/// While callers queue at intake, the running dispatcher takes a quarter
/// of the slots into the replica's own hands at a time; as those calls
/// start (sent on to a processor that is slow to answer) they leave its
/// hands, and it claims the next quarter at once, without an answer, a
/// submission or the poll interval (an hour here) to wake it.
async fn held_passes_go_on_as_their_calls_start(db: TestDb) {
    let clock = Arc::new(ManualClock::new());
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, options, |c| {
        c.max_in_flight = 16;
        c.poll_interval = Duration::from_secs(3600);
        c.intake_priority = Duration::from_secs(3600);
        c.breaker_failures = 0;
    })
    .await;
    let slow = FakeProcessor::start(Reply::Hang).await;
    slow.script(vec![Reply::Error(Code::Unavailable); 12]);
    let mut vendor = patient_push_processor("slow", &slow.endpoint());
    vendor.max_in_flight = 16;
    let policy = vendor.retry_policy.as_mut().unwrap();
    policy.initial_backoff = ms(60_000);
    policy.max_backoff = ms(60_000);
    register(&app, vendor).await;
    // Twelve first deliveries fail; their retries fall due within a
    // minute of the clock, which stands still until the test moves it.
    for n in 0..12 {
        submit(&app, deletion(&format!("h{n}@example.com"))).await;
    }
    slow.wait_for_calls(12).await;
    let failed_once = || async {
        let all = all_instructions(&app).await;
        all.iter()
            .all(|i| i.state() == pb::InstructionState::Pending && i.attempts == 1)
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while !failed_once().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every first delivery's failure recorded");
    let queue = app.callers_queuing();
    // All due now, and late by less than --intake-priority (an hour
    // here): held. One wake-up, as a submission gives, starts the first
    // held pass; only calls starting can start the others.
    clock.advance(Duration::from_secs(61));
    app.store.work_notifier().notify_one();
    slow.wait_for_calls(24).await;
    let (_, text) = app.admin_get("/metrics").await;
    let yields = text
        .lines()
        .find_map(|l| l.strip_prefix("dsr_dispatch_yields_total "))
        .expect("yield counter exported");
    assert!(
        yields.trim().parse::<f64>().unwrap() >= 3.0,
        "three held passes"
    );
    drop(queue);
    slow.release();
    app.stop().await;
}

/// A processor's `max_in_flight` lowered while deliveries to it are in
/// flight counts them: no pass starts another until they are fewer than
/// the new limit.
async fn a_lower_max_in_flight_counts_the_deliveries_already_in_flight(db: TestDb) {
    let app = TestApp::spawn_with(&db, one_pass_at_a_time(), |c| c.max_in_flight = 100).await;
    let slow = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    slow.script(vec![Reply::Hang; 4]);
    let mut vendor = patient_push_processor("slow", &slow.endpoint());
    vendor.max_in_flight = 4;
    register(&app, vendor).await;
    for n in 0..8 {
        submit(&app, deletion(&format!("lowered{n}@example.com"))).await;
    }
    let first = app.spawn_pass();
    slow.wait_for_calls(4).await;
    set_max_in_flight(&app, "slow", &slow, 2).await;
    // Four in flight, above the new limit of two: nothing starts.
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    slow.release();
    assert_eq!(first.await.unwrap(), 4);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 2);
    assert_eq!(slow.deliveries().len(), 6);
    app.stop().await;
}
