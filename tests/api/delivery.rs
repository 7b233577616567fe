//! Push delivery: fan-out, acknowledgements, retries, escalation, operator
//! controls, asynchronous outcomes and denials.

use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    deletion_fans_out_to_three_processors,
    retryable_errors_are_retried_and_kept,
    exhausted_retries_escalate_then_retry_and_resolve,
    asynchronous_outcome_by_callback,
    denial_with_exception_is_partial_fulfilment,
    an_idle_dispatcher_delivers_new_work_at_once,
    an_access_instruction_is_not_sent_without_the_request_it_serves,
    a_longer_timeout_holds_from_the_next_delivery,
    a_result_the_database_refuses_holds_back_no_other,
);

/// Test 1: a deletion to three push processors ends COMPLETED with a
/// FULFILLED record of three lines.
async fn deletion_fans_out_to_three_processors(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let mut fakes = Vec::new();
    for id in ["group-co", "platform-vendor", "distributor"] {
        let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        register(&app, push_processor(id, &fake.endpoint())).await;
        fakes.push(fake);
    }
    let req = submit(&app, deletion("alice@example.com")).await;
    assert_eq!(req.instructions.len(), 3);
    // The dispatcher may already have claimed an instruction by the time
    // the answer is read back.
    assert!(matches!(
        req.status(),
        pb::RequestStatus::Received | pb::RequestStatus::InProgress
    ));

    let events = watch_to_end(&app.requests, &req.request_id).await;
    let last = events.last().unwrap();
    assert_eq!(last.r#type(), pb::RequestEventType::Completed);
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "gap-free, in order"
    );

    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    assert_eq!(record.lines.len(), 3);
    let ids: Vec<_> = record
        .lines
        .iter()
        .map(|l| l.processor_id.as_str())
        .collect();
    assert_eq!(ids, ["distributor", "group-co", "platform-vendor"]);
    for line in &record.lines {
        assert_eq!(line.state(), pb::InstructionState::Completed);
        assert_eq!(line.attempts, 1);
        assert_eq!(line.country, "JP");
        assert!(line.first_instructed_at.is_some() && line.resolved_at.is_some());
        assert_eq!(line.resolved_by, "processor");
    }
    // The digest covers exactly the canonical bytes returned with it.
    assert_eq!(record.digest, sha256_hex(&record.canonical_json));
    // No raw identifiers in the record.
    let text = String::from_utf8(record.canonical_json.clone()).unwrap();
    assert!(!text.contains("alice@example.com"));

    // Data minimisation: each processor got the email, never the phone.
    for fake in &fakes {
        let d = fake.deliveries();
        assert_eq!(d.len(), 1);
        let types: Vec<_> = d[0].subject_identities.iter().map(|i| i.r#type()).collect();
        assert_eq!(types, [pb::IdentityType::Email]);
    }
    let done = get_request(&app, &req.request_id).await;
    assert_eq!(done.status(), pb::RequestStatus::Completed);
    assert!(!done.needs_attention);
    app.stop().await;
}

/// Test 3: UNAVAILABLE twice, then success: three attempts, errors kept,
/// and listed with the instruction they belong to.
async fn retryable_errors_are_retried_and_kept(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    fake.script([
        Reply::Error(Code::Unavailable),
        Reply::Error(Code::Unavailable),
    ]);
    register(&app, push_processor("flaky", &fake.endpoint())).await;
    let steady = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("steady", &steady.endpoint())).await;
    let req = submit(&app, deletion("bob@example.com")).await;
    watch_to_end(&app.requests, &req.request_id).await;

    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries
            .iter()
            .all(|d| d.instruction_id == deliveries[0].instruction_id)
    );
    assert_eq!(
        deliveries.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let listed = app
        .instructions
        .clone()
        .list_instructions(pb::ListInstructionsRequest {
            request_id: req.request_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .instructions;
    let results = |processor: &str| -> Vec<(String, String)> {
        let listed = listed.iter().find(|i| i.processor_id == processor).unwrap();
        assert_eq!(listed.state(), pb::InstructionState::Completed);
        let history = listed.history.iter();
        history
            .map(|a| (a.result.clone(), a.error_code.clone()))
            .collect()
    };
    let failed = ("retryable_error".to_string(), "UNAVAILABLE".to_string());
    let answered = ("outcome".to_string(), String::new());
    assert_eq!(results("flaky"), [failed.clone(), failed, answered.clone()]);
    assert_eq!(results("steady"), [answered]);
    let record = record(&app, &req.request_id).await;
    let attempts: Vec<_> = (record.lines.iter())
        .map(|l| (l.processor_id.as_str(), l.attempts))
        .collect();
    assert_eq!(attempts, [("flaky", 3), ("steady", 1)]);
    app.stop().await;
}

/// Test 4: a processor that always fails is escalated after max attempts;
/// RetryInstruction re-arms it; ResolveInstruction closes it.
async fn exhausted_retries_escalate_then_retry_and_resolve(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Error(Code::Unavailable)).await;
    let token = register(&app, push_processor("down", &fake.endpoint())).await;
    let req = submit(&app, deletion("carol@example.com")).await;
    let instruction_id = req.instructions[0].instruction_id.clone();

    // max_attempts is 4: wait for the fourth delivery, then for escalation.
    fake.wait_for_calls(4).await;
    let escalated = wait_for_state(&app, &instruction_id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.attempts, 4);
    let r = get_request(&app, &req.request_id).await;
    assert!(r.needs_attention);
    assert!(r.instructions[0].last_error.contains("UNAVAILABLE"));
    assert!(
        r.instructions[0]
            .last_error
            .contains("retries exhausted after 4 attempts"),
        "{}",
        r.instructions[0].last_error
    );
    // Every attempt is kept as what the processor said, the last one
    // too: the escalation is the consequence, not the answer.
    let listed = all_instructions(&app).await;
    let results: Vec<_> = listed[0]
        .history
        .iter()
        .map(|a| (a.result.as_str(), a.error_code.as_str()))
        .collect();
    assert_eq!(results, [("retryable_error", "UNAVAILABLE"); 4]);
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            r#"dsr_delivery_attempts_total{processor="down",result="retryable_error"} 4"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("fatal_error"), "{metrics}");

    // Re-arm: a fresh budget of four more attempts, then escalated again.
    let rearmed = app
        .instructions
        .clone()
        .retry_instruction(pb::RetryInstructionRequest {
            instruction_id: instruction_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rearmed.state(), pb::InstructionState::Pending);
    fake.wait_for_calls(8).await;
    wait_for_state(&app, &instruction_id, pb::InstructionState::Escalated).await;

    // Retrying something not escalated is refused.
    let err = app
        .instructions
        .clone()
        .retry_instruction(pb::RetryInstructionRequest {
            instruction_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["instruction_id"]);

    // An operator records the outcome obtained by phone.
    let resolved = app
        .instructions
        .clone()
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: instruction_id.clone(),
            result: result(pb::Outcome::NoData),
            note: "confirmed by phone with the vendor's DPO".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.state(), pb::InstructionState::NoData);
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    assert_eq!(
        record.lines[0].resolved_by,
        "operator: confirmed by phone with the vendor's DPO"
    );
    assert_eq!(record.lines[0].attempts, 8);
    // The same call again (a retry after a lost answer) is answered as it
    // stands; with another note, it would drop that note: refused.
    let mut client = app.instructions.clone();
    let mut again = async |note: &str| {
        client
            .resolve_instruction(pb::ResolveInstructionRequest {
                instruction_id: instruction_id.clone(),
                result: result(pb::Outcome::NoData),
                note: note.into(),
            })
            .await
    };
    let same = again("confirmed by phone with the vendor's DPO")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.state(), pb::InstructionState::NoData);
    let other = again("confirmed by e-mail").await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::FailedPrecondition, "{other:?}");
    // The processor's own answer, when it agrees, is taken as a repeat.
    let late = client
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: instruction_id.clone(),
                result: result(pb::Outcome::NoData),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.state(), pb::InstructionState::NoData);
    let again = crate::harness::fixtures::record(&app, &req.request_id).await;
    assert_eq!(
        again.lines[0].resolved_by,
        "operator: confirmed by phone with the vendor's DPO"
    );
    app.stop().await;
}

/// Test 5: ACCEPTED, then CompleteInstruction with the processor's token; a
/// bad token is UNAUTHENTICATED, another processor's PERMISSION_DENIED.
async fn asynchronous_outcome_by_callback(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let slow = FakeProcessor::start(Reply::Accepted).await;
    let other = FakeProcessor::start(Reply::Accepted).await;
    let token = register(&app, push_processor("async-vendor", &slow.endpoint())).await;
    let other_token = register(&app, push_processor("other-vendor", &other.endpoint())).await;
    let mut req = deletion("dave@example.com");
    req.processor_ids = vec!["async-vendor".into()];
    let req = submit(&app, req).await;
    let id = req.instructions[0].instruction_id.clone();
    let acked = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert!(acked.summary.unwrap().acknowledged_at.is_some());

    let complete = |token: &str| {
        authed(
            token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    sub_processors: vec![pb::SubProcessor {
                        name: "Backup Co".into(),
                        country: "IL".into(),
                    }],
                    ..Default::default()
                }),
            },
        )
    };
    let mut client = app.instructions.clone();
    let err = client
        .complete_instruction(complete("dsrcb_wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .complete_instruction(tonic::Request::new(pb::CompleteInstructionRequest {
            instruction_id: id.clone(),
            result: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .complete_instruction(complete(&other_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let done = client
        .complete_instruction(complete(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state(), pb::InstructionState::Completed);
    // Repeating the same answer is harmless; a different one is refused.
    client.complete_instruction(complete(&token)).await.unwrap();
    let err = client
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                result: result(pb::Outcome::NoData),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // An operator "resolving" what the processor answered, with the same
    // result, would have its note dropped: refused.
    let err = client
        .resolve_instruction(pb::ResolveInstructionRequest {
            instruction_id: id.clone(),
            result: complete(&token).into_inner().result,
            note: "the vendor said so on the phone".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    watch_to_end(&app.requests, &req.request_id).await;
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.lines[0].resolved_by, "processor");
    assert_eq!(record.lines[0].sub_processors[0].name, "Backup Co");
    assert!(record.lines[0].acknowledged_at.is_some());
    assert!(other.deliveries().is_empty(), "restricted fan-out");
    app.stop().await;
}

/// Test 7: DENIED with an exception yields PARTIALLY_FULFILLED and the basis
/// in the record; DENIED without one is INVALID_ARGUMENT.
async fn denial_with_exception_is_partial_fulfilment(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let ok = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let keeper = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("crm", &ok.endpoint())).await;
    let token = register(&app, push_processor("billing", &keeper.endpoint())).await;
    let req = submit(&app, deletion("erin@example.com")).await;
    let billing = req
        .instructions
        .iter()
        .find(|i| i.processor_id == "billing")
        .unwrap();
    wait_for_state(
        &app,
        &billing.instruction_id,
        pb::InstructionState::Acknowledged,
    )
    .await;

    let mut client = app.instructions.clone();
    let err = client
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: billing.instruction_id.clone(),
                result: result(pb::Outcome::Denied),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["result.exception", "result.explanation"]);

    client
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: billing.instruction_id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Denied as i32,
                    exception: pb::DeletionException::CcpaLegalObligation as i32,
                    explanation: "invoices kept 7 years for tax law; everything else deleted"
                        .into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    watch_to_end(&app.requests, &req.request_id).await;
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::PartiallyFulfilled);
    assert_eq!(
        record.denial_basis,
        [
            "billing: CCPA_LEGAL_OBLIGATION: invoices kept 7 years for tax law; everything else deleted"
        ]
    );
    let line = record
        .lines
        .iter()
        .find(|l| l.processor_id == "billing")
        .unwrap();
    assert_eq!(line.exception(), pb::DeletionException::CcpaLegalObligation);
    app.stop().await;
}

/// A submission wakes an idle dispatcher: the instruction goes out at once,
/// not at the dispatcher's next poll (an hour away here).
async fn an_idle_dispatcher_delivers_new_work_at_once(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.poll_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    submit(&app, deletion("olga@example.com")).await;
    fake.wait_for_calls(1).await;
    assert_eq!(fake.deliveries().len(), 1);
    app.stop().await;
}

/// An access delivery says what the person asks (scope, look-back), read
/// from the request at each delivery. A request that cannot be read is not
/// replaced by a delivery without them: the instruction escalates with
/// the reason kept, and the processor is sent nothing.
async fn an_access_instruction_is_not_sent_without_the_request_it_serves(db: TestDb) {
    let options = dsr_orchestrator::startup::Options {
        run_dispatcher: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("crm", &fake.endpoint())).await;
    let req = submit(
        &app,
        pb::SubmitRequestRequest {
            kind: pb::RequestKind::Access as i32,
            access_scope: pb::AccessScope::Categories as i32,
            ..deletion("ann@example.com")
        },
    )
    .await;
    // A value no submission can store: the row no longer decodes.
    db.execute("update requests set submitted_by = 'not an actor'")
        .await;

    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let i = wait_for_state(
        &app,
        &req.instructions[0].instruction_id,
        pb::InstructionState::Escalated,
    )
    .await;
    assert_eq!(error_codes(&i), ["REQUEST_UNREADABLE"]);
    assert!(fake.deliveries().is_empty(), "nothing was sent");
    app.stop().await;
}

/// A processor's timeout, raised, holds from its next delivery: the
/// connection kept from a delivery before is not left cutting calls off at
/// the old one.
async fn a_longer_timeout_holds_from_the_next_delivery(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let with_timeout = |ms: u64| {
        let mut spec = push_processor("vendor", &fake.endpoint());
        if let Some(pb::adapter::Kind::Grpc(g)) = spec.adapter.as_mut().unwrap().kind.as_mut() {
            g.timeout = Some(prost_types::Duration {
                seconds: 0,
                nanos: (ms * 1_000_000) as i32,
            });
        }
        spec
    };
    register(&app, with_timeout(200)).await;
    submit(&app, deletion("first@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "delivered");

    app.processors
        .clone()
        .update_processor(pb::UpdateProcessorRequest {
            processor: Some(with_timeout(900)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["adapter".into()],
            }),
        })
        .await
        .unwrap();
    fake.set_default(Reply::Hang);
    let second = submit(&app, deletion("second@example.com")).await;
    let mut delivering = {
        let dispatcher = app.dispatcher.clone();
        tokio::spawn(async move { dispatcher.run_once().await })
    };
    fake.wait_for_calls(2).await;
    // Past the old timeout, well within the new one: the call still waits
    // for the processor (the old timeout would have cut it at 200 ms).
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut delivering).await;
    assert!(waited.is_err(), "the delivery was cut off before 500 ms");
    fake.release();
    delivering.await.unwrap().unwrap();
    let line = &record(&app, &second.request_id).await.lines[0];
    assert_eq!(line.state(), pb::InstructionState::Completed);
    app.stop().await;
}

/// A result the database refuses for good (here a trigger of the test's
/// refuses one processor's completion) is left to its lease; the results
/// that came back with it, in its batch or not, are written. Ten answers
/// come back together, so that the refused one most likely shares a batch
/// (the recorder takes what has queued; nothing forces it).
async fn a_result_the_database_refuses_holds_back_no_other(db: TestDb) {
    let app = TestApp::spawn_without_dispatcher(&db).await;
    if db.postgres_name().is_some() {
        db.execute(
            "create function refuse_bad() returns trigger language plpgsql as $$ \
             begin if new.processor_id = 'bad' and new.state = 'COMPLETED' then \
             raise exception 'refused by the test'; end if; return new; end $$; \
             create trigger refuse_bad before update on instructions \
             for each row execute function refuse_bad();",
        )
        .await;
    } else {
        db.execute(
            "create trigger refuse_bad before update on instructions \
             when new.processor_id = 'bad' and new.state = 'COMPLETED' \
             begin select raise(abort, 'refused by the test'); end;",
        )
        .await;
    }
    // Every processor answers when released, all at once, so that their
    // results queue for the recorder together.
    let fake = FakeProcessor::start(Reply::Hang).await;
    let ids: Vec<String> = (1..10)
        .map(|n| format!("good-{n}"))
        .chain(["bad".to_string()])
        .collect();
    for id in &ids {
        register(&app, patient_push_processor(id, &fake.endpoint())).await;
    }
    submit(&app, deletion("refused-result@example.com")).await;
    let pass = app.spawn_pass();
    fake.wait_for_calls(ids.len()).await;
    fake.release();
    assert_eq!(pass.await.unwrap(), ids.len());
    let states: std::collections::BTreeMap<_, _> = all_instructions(&app)
        .await
        .into_iter()
        .map(|i| (i.processor_id.clone(), i.state()))
        .collect();
    for id in &ids[..9] {
        assert_eq!(states[id], pb::InstructionState::Completed, "{states:?}");
    }
    assert_eq!(
        states["bad"],
        pb::InstructionState::Delivering,
        "{states:?}"
    );
    app.stop().await;
}
