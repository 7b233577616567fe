//! Cancel notices: durable, retried, within their processor's limit,
//! and heard by pull processors too.

use std::time::Duration;

use dsr_orchestrator::pb;

use crate::backends;
use crate::harness::*;

backends!(
    a_cancel_notice_survives_a_crash_before_it_is_sent,
    cancel_notices_are_retried_like_deliveries,
    pull_processors_hear_of_cancellations_until_they_acknowledge,
    a_cancel_notice_waits_for_a_slot_of_its_processor,
);

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
