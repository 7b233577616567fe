//! Cancel notices: durable, retried, within their processor's limit,
//! and heard by pull processors too.

use std::time::Duration;

use dsr_orchestrator::domain::ProcessorId;
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::circuit_breaker::State;
use dsr_orchestrator::startup::Options;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    a_cancel_notice_survives_a_crash_before_it_is_sent,
    cancel_notices_are_retried_like_deliveries,
    pull_processors_hear_of_cancellations_until_they_acknowledge,
    a_cancel_notice_waits_for_a_slot_of_its_processor,
    a_cancel_notice_goes_before_a_backlog_of_deliveries,
    processors_take_turns_at_the_first_notice_slot,
    cancel_notices_keep_within_the_intake_hold,
    a_cancel_notice_waits_while_its_processors_breaker_is_open,
    a_cancel_notice_probes_a_breaker_no_delivery_can,
    a_failed_probe_spends_none_of_the_notices_attempts,
    a_notice_leased_again_is_finished_by_its_new_holder_only,
);

/// A replica whose passes run only when the test says
/// (`--max-in-flight` as given, else the default), and a processor
/// `vendor` that accepts every delivery.
async fn by_hand(db: &TestDb, max_in_flight: Option<usize>) -> (TestApp, FakeProcessor) {
    let manual = Options {
        run_dispatcher: false,
        ..Options::default()
    };
    let app = TestApp::spawn_with(db, manual, |c| {
        if let Some(n) = max_in_flight {
            c.max_in_flight = n;
        }
    })
    .await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    (app, fake)
}

/// Submits a deletion of `email` and waits until every processor has
/// acknowledged its instruction.
async fn acknowledged(app: &TestApp, email: &str) -> pb::DataSubjectRequest {
    let req = submit(app, deletion(email)).await;
    for line in &req.instructions {
        wait_for_state(
            app,
            &line.instruction_id,
            pb::InstructionState::Acknowledged,
        )
        .await;
    }
    req
}

async fn notices_left(db: &TestDb) -> Vec<String> {
    db.texts("select instruction_id from cancel_notices order by instruction_id")
        .await
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
}

/// The cancel is committed by a replica that stops before any notice goes
/// out; the next replica to start tells every push processor (gRPC,
/// webhook, OpenDSR), and nothing is left to send.
async fn a_cancel_notice_survives_a_crash_before_it_is_sent(db: TestDb) {
    let first = TestApp::spawn(&db).await;
    let grpc = FakeProcessor::start(Reply::Accepted).await;
    let hook = FakeHook::start(HookReply::accepted()).await;
    register(&first, push_processor("grpc-slow", &grpc.endpoint())).await;
    let secret = first
        .processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(webhook_processor("hook-slow", &hook.url())),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook_secret;
    let opendsr = FakeOpenDsr::start().await;
    register(
        &first,
        opendsr_processor("opendsr-slow", &opendsr.url(), 3_600_000),
    )
    .await;
    let req = acknowledged(&first, "notice-ivan@example.com").await;
    first.stop().await;

    // A replica without a dispatcher takes the cancel and goes away.
    let second = TestApp::spawn_without_dispatcher(&db).await;
    cancel(&second, &req.request_id, "consumer withdrew the request").await;
    second.stop().await;
    assert_eq!(notices_left(&db).await.len(), 3);
    assert!(grpc.cancels().is_empty());
    assert_eq!(hook.received().len(), 1);
    assert!(opendsr.deleted().is_empty());

    let third = TestApp::spawn(&db).await;
    grpc.wait_for_calls(2).await;
    hook.wait_for(2).await;
    opendsr.wait_for_calls(2).await;
    let id_of = |processor: &str| instruction_of(&req, processor);
    assert_eq!(grpc.cancels()[0].instruction_id, id_of("grpc-slow"));
    assert_eq!(grpc.cancels()[0].reason, "consumer withdrew the request");
    let notice = &hook.received()[1];
    assert_eq!(notice.event_type(), "dsr.instruction.cancel");
    assert_eq!(notice.instruction_id(), id_of("hook-slow"));
    assert_eq!(notice.webhook_id, format!("{}_cancel", id_of("hook-slow")));
    assert_eq!(
        notice.event["data"]["reason"],
        serde_json::json!("consumer withdrew the request")
    );
    assert!(notice.signed_with(&secret));
    assert_eq!(opendsr.deleted(), [id_of("opendsr-slow")]);
    // Stopping waits for the notices in flight to be written off.
    third.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// A notice the processor cannot take yet (503, then 429 with
/// `Retry-After: 1`) is sent again until it is taken.
async fn cancel_notices_are_retried_like_deliveries(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::accepted()).await;
    register(&app, webhook_processor("hook-flaky", &hook.url())).await;
    let req = submit(&app, deletion("notice-judy@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    hook.script([
        HookReply::json(503, ""),
        HookReply::json(429, "").with_header("retry-after", "1"),
    ]);
    cancel(&app, &req.request_id, "duplicate request").await;
    hook.wait_for(4).await;
    let got = hook.received();
    let notices: Vec<_> = got[1..]
        .iter()
        .map(|r| (r.event_type(), r.webhook_id.as_str()))
        .collect();
    let cancel_id = format!("{id}_cancel");
    assert_eq!(
        notices,
        [("dsr.instruction.cancel", cancel_id.as_str()); 3],
        "the same notice, three times"
    );
    assert!(got[3].at - got[2].at >= std::time::Duration::from_secs(1));
    // Both failures were counted before the third attempt was made.
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"dsr_cancel_notices_total{processor="hook-flaky",result="retried"} 2"#),
        "{metrics}"
    );
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// A pull processor that had pulled an instruction finds its cancellation
/// in its pulls until it acknowledges it.
async fn pull_processors_hear_of_cancellations_until_they_acknowledge(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let token = register(&app, pull_processor("puller", 1_000)).await;
    let req = submit(&app, deletion("notice-ken@example.com")).await;
    let pulled = pull(&app, &token, 5).await;
    assert_eq!(pulled.len(), 1);
    let id = pulled[0].instruction_id.clone();
    cancel(&app, &req.request_id, "the person asked again by phone").await;

    let answer = app
        .instructions
        .clone()
        .pull_instructions(authed(
            &token,
            pb::PullInstructionsRequest {
                max_instructions: 5,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.instructions.is_empty());
    assert_eq!(answer.cancellations.len(), 1);
    assert_eq!(answer.cancellations[0].instruction_id, id);
    assert_eq!(
        answer.cancellations[0].reason,
        "the person asked again by phone"
    );
    // Leased for the ack timeout: the next pull at once does not repeat it.
    let again = app
        .instructions
        .clone()
        .pull_instructions(authed(&token, pb::PullInstructionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(again.cancellations.is_empty());
    assert_eq!(notices_left(&db).await, std::slice::from_ref(&id));

    // Acknowledging the cancelled instruction ends the notice.
    let acked = app
        .instructions
        .clone()
        .acknowledge_instruction(authed(
            &token,
            pb::AcknowledgeInstructionRequest {
                instruction_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.state(), pb::InstructionState::Cancelled);
    assert!(notices_left(&db).await.is_empty());
    app.stop().await;
}

/// A notice is a call to the processor like a delivery, and waits for a
/// slot of its processor. Two processors acknowledge a request; one may
/// take a single delivery at a time, and is sent one that hangs. When the
/// request is cancelled, the other hears at once; the busy one's notice
/// is neither sent nor leased through two more passes, and goes out once
/// the hanging delivery has answered.
async fn a_cancel_notice_waits_for_a_slot_of_its_processor(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.poll_interval = Duration::from_millis(20);
    })
    .await;
    let busy = FakeProcessor::start(Reply::Accepted).await;
    let roomy = FakeProcessor::start(Reply::Accepted).await;
    let mut p = patient_push_processor("one-at-a-time", &busy.endpoint());
    p.max_in_flight = 1;
    register(&app, p).await;
    register(&app, push_processor("roomy", &roomy.endpoint())).await;
    let withdrawn = acknowledged(&app, "notice-ken@example.com").await;
    let id_of = |processor: &str| instruction_of(&withdrawn, processor);
    busy.script([Reply::Hang]);
    let hanging = submit(&app, deletion("notice-lee@example.com")).await;
    busy.wait_for_calls(2).await;

    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;
    roomy.wait_for_calls(3).await;
    assert_eq!(roomy.cancels()[0].instruction_id, id_of("roomy"));
    app.two_more_passes().await;
    assert!(busy.cancels().is_empty());
    // The roomy processor's notice is deleted once its answer is in.
    let waiting = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let rows = db
                .texts("select instruction_id, cast(attempts as text) from cancel_notices")
                .await;
            if rows.len() == 1 {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the roomy processor's notice is done");
    assert_eq!(
        waiting,
        [[Some(id_of("one-at-a-time")), Some("0".to_string())]]
    );

    busy.release();
    busy.wait_for_calls(3).await;
    assert_eq!(busy.cancels().len(), 1);
    assert_eq!(busy.cancels()[0].instruction_id, id_of("one-at-a-time"));
    for line in &hanging.instructions {
        let state = match line.processor_id.as_str() {
            "roomy" => pb::InstructionState::Acknowledged,
            _ => pb::InstructionState::Completed,
        };
        wait_for_state(&app, &line.instruction_id, state).await;
    }
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// A pass sends cancel notices before it claims: with two slots and more
/// deliveries due than that, the notice still goes in the next pass.
async fn a_cancel_notice_goes_before_a_backlog_of_deliveries(db: TestDb) {
    let (app, fake) = by_hand(&db, Some(2)).await;
    let withdrawn = submit(&app, deletion("notice-ada@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    for n in 0..3 {
        submit(&app, deletion(&format!("notice-backlog-{n}@example.com"))).await;
    }
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;

    // The notice's answer waits, so its slot stays taken through the
    // pass's claim (an answer hands the slot over at once).
    fake.hang_cancels();
    let pass = app.spawn_pass();
    fake.wait_for_calls(3).await;
    fake.release();
    assert_eq!(pass.await.unwrap(), 2);
    let cancels = fake.cancels();
    assert_eq!(cancels.len(), 1, "the notice took one of the two slots");
    assert_eq!(
        cancels[0].instruction_id,
        instruction_of(&withdrawn, "vendor")
    );
    assert_eq!(fake.deliveries().len(), 2, "the backlog took the other");
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// With one slot a pass and notices due to two processors, who reserves
/// first rotates: two passes send one notice to each, not both to the
/// processor that comes first.
async fn processors_take_turns_at_the_first_notice_slot(db: TestDb) {
    let (app, vendor) = by_hand(&db, Some(1)).await;
    let other = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("other", &other.endpoint())).await;
    let withdrawn = [
        submit(&app, deletion("notice-turn-1@example.com")).await,
        submit(&app, deletion("notice-turn-2@example.com")).await,
    ];
    // One delivery a pass, until all four have gone out.
    for _ in 0..8 {
        if vendor.deliveries().len() + other.deliveries().len() == 4 {
            break;
        }
        app.dispatcher.run_once().await.unwrap();
    }
    assert_eq!(vendor.deliveries().len(), 2);
    assert_eq!(other.deliveries().len(), 2);
    for request in &withdrawn {
        cancel(&app, &request.request_id, "consumer withdrew the request").await;
    }
    assert_eq!(notices_left(&db).await.len(), 4);

    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(vendor.cancels().len(), 1, "one each");
    assert_eq!(other.cancels().len(), 1, "one each");
    app.stop().await;
}

/// While callers queue, notices take no more slots than the pass's held
/// cap (a quarter of `--max-in-flight` 16): of six due, one pass sends
/// four.
async fn cancel_notices_keep_within_the_intake_hold(db: TestDb) {
    let (app, fake) = by_hand(&db, Some(16)).await;
    let mut withdrawn = Vec::new();
    for n in 0..6 {
        withdrawn.push(submit(&app, deletion(&format!("notice-held-{n}@example.com"))).await);
    }
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 6);
    for req in &withdrawn {
        cancel(&app, &req.request_id, "consumer withdrew the request").await;
    }

    // The answers wait, so the pass cannot reuse a notice's slot.
    fake.hang_cancels();
    let queuing = app.callers_queuing();
    let pass = app.spawn_pass();
    fake.wait_for_calls(6 + 4).await;
    fake.release();
    assert_eq!(pass.await.unwrap(), 4);
    assert_eq!(fake.cancels().len(), 4);
    drop(queuing);
    app.stop().await;
}

/// A replica whose breakers open after three failures and cool down for
/// `cooldown`, a processor `fragile` retrying up to `attempts` times, and
/// a request it acknowledged; then its breaker is opened by three
/// failures of another request's delivery.
async fn acknowledged_then_broken(
    db: &TestDb,
    cooldown: Duration,
    attempts: u32,
) -> (TestApp, FakeProcessor, pb::DataSubjectRequest) {
    let app = TestApp::spawn_with(db, Options::default(), |c| {
        c.breaker_failures = 3;
        c.breaker_cooldown = cooldown;
        c.poll_interval = Duration::from_millis(20);
    })
    .await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    let mut processor = fragile("fragile", &fake.endpoint());
    processor.retry_policy.as_mut().unwrap().max_attempts = attempts;
    register(&app, processor).await;
    let withdrawn = acknowledged(&app, "notice-may@example.com").await;
    fake.set_default(Reply::Error(Code::Unavailable));
    submit(&app, deletion("notice-ned@example.com")).await;
    fake.wait_for_calls(4).await;
    // Open, or half open once a short cool-down is over.
    let opened = [State::Open, State::HalfOpen];
    until_breaker(
        &app,
        "fragile",
        &opened,
        "the breaker opens after three failures",
    )
    .await;
    (app, fake, withdrawn)
}

/// A processor whose circuit breaker is open gets no cancel notice, which
/// would only spend the notice's retries on the outage: the notice waits,
/// its budget whole, until the breaker closes.
async fn a_cancel_notice_waits_while_its_processors_breaker_is_open(db: TestDb) {
    let (app, fake, withdrawn) = acknowledged_then_broken(&db, Duration::from_secs(3600), 50).await;
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;
    app.two_more_passes().await;
    assert!(
        fake.cancels().is_empty(),
        "no notice while the breaker is open"
    );
    let waiting = db
        .texts("select instruction_id, cast(attempts as text) from cancel_notices")
        .await;
    let id = instruction_of(&withdrawn, "fragile");
    assert_eq!(waiting, [[Some(id.clone()), Some("0".to_string())]]);

    fake.set_default(Reply::Accepted);
    let close = pb::CloseCircuitBreakerRequest {
        processor_id: "fragile".into(),
    };
    app.processors
        .clone()
        .close_circuit_breaker(close)
        .await
        .unwrap();
    fake.wait_for_calls(6).await;
    let cancels = fake.cancels();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].instruction_id, id);
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// With no delivery left to probe it (the one that opened it escalated),
/// a half-open breaker is probed by a cancel notice: the processor's
/// answer closes it.
async fn a_cancel_notice_probes_a_breaker_no_delivery_can(db: TestDb) {
    let (app, fake, withdrawn) = acknowledged_then_broken(&db, Duration::from_millis(200), 3).await;
    let ned = wait_for_state(
        &app,
        &fake.deliveries()[1].instruction_id,
        pb::InstructionState::Escalated,
    )
    .await;
    assert_eq!(ned.attempts, 3);
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;
    until_the_notice_closes_the_breaker(&app).await;
    let cancels = fake.cancels();
    assert_eq!(cancels.len(), 1);
    assert_eq!(
        cancels[0].instruction_id,
        instruction_of(&withdrawn, "fragile")
    );
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// Waits until the notice's answer has closed the fragile processor's
/// breaker.
async fn until_the_notice_closes_the_breaker(app: &TestApp) {
    let closed = [State::Closed];
    until_breaker(
        app,
        "fragile",
        &closed,
        "the notice's answer closes the breaker",
    )
    .await;
}

/// A probe notice that fails opens the breaker again and gives its
/// attempt back: the outage failed, not the notice. With a budget of three
/// attempts, more than three failed probes still leave the notice to be
/// sent once the processor answers.
async fn a_failed_probe_spends_none_of_the_notices_attempts(db: TestDb) {
    let (app, fake, withdrawn) = acknowledged_then_broken(&db, Duration::from_millis(50), 3).await;
    let escalated = &fake.deliveries()[1].instruction_id;
    wait_for_state(&app, escalated, pb::InstructionState::Escalated).await;
    fake.fail_cancels(Some(Code::Unavailable));
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;
    let retried = |metrics: &str| -> u64 {
        let line = r#"dsr_cancel_notices_total{processor="fragile",result="retried"} "#;
        let count = metrics.lines().find_map(|l| l.strip_prefix(line));
        count.map_or(0, |n| n.parse().unwrap())
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        while retried(&app.admin_get("/metrics").await.1) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("four failed probes");
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(!metrics.contains(r#"result="given_up""#), "{metrics}");

    fake.fail_cancels(None);
    until_the_notice_closes_the_breaker(&app).await;
    app.stop().await;
    assert!(notices_left(&db).await.is_empty());
}

/// A notice whose lease ran out before its sender wrote the answer, and
/// which another pass leased again, is finished by its new holder only:
/// the first sender's delete or rescheduling, fenced by the attempt it
/// leased, changes nothing.
async fn a_notice_leased_again_is_finished_by_its_new_holder_only(db: TestDb) {
    let (app, _fake) = by_hand(&db, None).await;
    let withdrawn = submit(&app, deletion("notice-eve@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;

    let vendor = ProcessorId::parse("vendor").unwrap();
    let lease = Duration::from_secs(1);
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::seconds(2);
    let store = &app.store;
    let ask = [(&vendor, 1)];
    let first = store.lease_cancel_notices(&ask, lease, now);
    let first = first.await.unwrap().remove(0);
    let second = store.lease_cancel_notices(&ask, lease, later);
    let second = second.await.unwrap().remove(0);
    assert_eq!((first.attempts, second.attempts), (1, 2));
    let id = first.instruction_id;
    let leased_until = || async {
        db.texts("select cast(next_attempt_at as text) from cancel_notices")
            .await
    };
    let second_lease = leased_until().await;
    let in_an_hour = later + chrono::Duration::hours(1);
    let stale = (
        store
            .cancel_notice_retry(id, 1, in_an_hour, false)
            .await
            .unwrap(),
        store.cancel_notice_done(id, Some(1)).await.unwrap(),
    );
    assert_eq!(stale, (false, false));
    assert_eq!(
        leased_until().await,
        second_lease,
        "the first sender's writes"
    );

    assert!(
        store
            .cancel_notice_retry(id, 2, in_an_hour, false)
            .await
            .unwrap()
    );
    assert_ne!(
        leased_until().await,
        second_lease,
        "rescheduled by its holder"
    );
    assert!(store.cancel_notice_done(id, Some(2)).await.unwrap());
    assert!(notices_left(&db).await.is_empty());
    app.stop().await;
}
