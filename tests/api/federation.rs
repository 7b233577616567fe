//! Federation: an upstream orchestrator delivering to a downstream one
//! (two real servers, each on its own database), as a caller the
//! downstream authenticates by a bearer token read from a file.

use std::time::Duration;

use tokio_stream::StreamExt;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;

use crate::backends;
use crate::harness::app::token_hash;
use crate::harness::*;

backends!(
    a_downstream_orchestrator_answers_with_its_whole_chain,
    cancelling_upstream_cancels_the_downstream_request,
    a_downstream_that_refuses_the_caller_escalates,
    a_poll_lost_with_its_replica_is_polled_again,
    a_federated_access_request_brings_the_data_up,
    polls_that_fail_while_the_downstream_is_away_spend_no_budget,
    a_chain_of_federations_carries_categories_to_the_top,
);

/// The token the upstream presents downstream.
const UPSTREAM_TOKEN: &str = "upstream-orchestrator-token";

/// A downstream orchestrator that knows the upstream as a submitter, with
/// one push processor; and an upstream whose `group-co` is that
/// downstream, polled every `poll_ms`, its token in a file.
async fn pair(db: &TestDb, reply: Reply, poll_ms: u64) -> Pair {
    pair_with(db, reply, poll_ms, Options::default(), |_| {}).await
}

/// [`pair`] with the upstream on `options` and its `group-co` as `tweak`
/// leaves it.
async fn pair_with(
    db: &TestDb,
    reply: Reply,
    poll_ms: u64,
    options: Options,
    tweak: impl FnOnce(&mut pb::Processor),
) -> Pair {
    let down_db = TestDb::like(db).await;
    let principal = format!(
        "  - principal: upstream\n    sha256: {}\n    roles: [submitter]\n",
        token_hash(UPSTREAM_TOKEN)
    );
    let downstream = TestApp::spawn_authenticated(&down_db, &principal, |_| {}).await;
    let warehouse = FakeProcessor::start(reply).await;
    let warehouse_token = register(
        &downstream,
        push_processor("warehouse", &warehouse.endpoint()),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{UPSTREAM_TOKEN}\n")).unwrap();
    let upstream = TestApp::spawn_with(db, options, |_| {}).await;
    let endpoint = format!("http://{}", downstream.addr);
    let mut group = dsr_processor_with_token("group-co", &endpoint, poll_ms, &token_file);
    tweak(&mut group);
    register(&upstream, group).await;
    Pair {
        upstream,
        downstream,
        warehouse,
        warehouse_token,
        _down_db: down_db,
        dir,
    }
}

/// Two orchestrators, the downstream's processor, and what must live as
/// long as they do (bind `_down_db` and `dir`: a field left to `..` is
/// dropped at once).
struct Pair {
    upstream: TestApp,
    downstream: TestApp,
    warehouse: FakeProcessor,
    warehouse_token: String,
    _down_db: TestDb,
    dir: tempfile::TempDir,
}

/// The downstream request an upstream instruction became.
async fn downstream_request(downstream: &TestApp, instruction_id: &str) -> pb::DataSubjectRequest {
    get_request(downstream, instruction_id).await
}

/// The upstream request goes downstream under the instruction's id with
/// the request's facts; while the downstream works the instruction is
/// acknowledged and polled; the downstream's record becomes the outcome,
/// and its processor the upstream line's sub-processor.
async fn a_downstream_orchestrator_answers_with_its_whole_chain(db: TestDb) {
    let Pair {
        upstream,
        downstream,
        warehouse,
        warehouse_token,
        _down_db,
        dir: _dir,
    } = pair(&db, Reply::Accepted, 1000).await;
    let req = submit(&upstream, deletion("federated-fay@example.com")).await;
    let line = &req.instructions[0];
    assert_eq!(line.processor_id, "group-co");
    wait_for_state(
        &upstream,
        &line.instruction_id,
        pb::InstructionState::Acknowledged,
    )
    .await;

    let down = downstream_request(&downstream, &line.instruction_id).await;
    assert_eq!(down.kind, pb::RequestKind::Delete as i32);
    assert_eq!(down.jurisdiction, pb::Jurisdiction::Ccpa as i32);
    assert_eq!(down.channel, "web_form");
    assert_eq!(down.requester, pb::Requester::Self_ as i32);
    assert_eq!(
        down.verification.as_ref().unwrap().level,
        pb::VerificationLevel::ReasonablyHigh as i32
    );
    assert_eq!(down.submitted_at, req.submitted_at);
    assert_eq!(
        down.labels.get("dsr.upstream_request_id"),
        Some(&req.request_id)
    );
    assert_eq!(down.submitted_by, "upstream");
    // Only the identities group-co accepts went on (the phone did not).
    assert_eq!(down.identity_types, [pb::IdentityType::Email as i32]);

    // The downstream processor finishes; the upstream's next poll sees it.
    warehouse.wait_for_calls(1).await;
    let down_line = &down.instructions[0].instruction_id;
    downstream
        .instructions
        .clone()
        .complete_instruction(authed(
            &warehouse_token,
            pb::CompleteInstructionRequest {
                instruction_id: down_line.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    sub_processors: vec![pb::SubProcessor {
                        name: "Cold Storage KK".into(),
                        country: "JP".into(),
                    }],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    watch_to_end(&upstream.requests, &req.request_id).await;
    let record = record(&upstream, &req.request_id).await;
    assert_eq!(record.outcome, pb::OverallOutcome::Fulfilled as i32);
    let line = &record.lines[0];
    assert_eq!(line.state, pb::InstructionState::Completed as i32);
    let chain: Vec<(&str, &str)> = line
        .sub_processors
        .iter()
        .map(|s| (s.name.as_str(), s.country.as_str()))
        .collect();
    assert_eq!(chain, [("warehouse Ltd.", "JP"), ("Cold Storage KK", "JP")]);
    // Exactly one downstream request, however often it was asked.
    assert_eq!(all_requests(&downstream).await.len(), 1);
}

/// A cancel upstream becomes a cancel of the downstream request, which
/// tells the downstream's own processor, even when the replica that took
/// the cancel stopped before any notice went out.
async fn cancelling_upstream_cancels_the_downstream_request(db: TestDb) {
    let Pair {
        upstream,
        downstream,
        warehouse,
        _down_db,
        dir: _dir,
        ..
    } = pair(&db, Reply::Accepted, 60_000).await;
    let req = submit(&upstream, deletion("federated-gus@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&upstream, &id, pb::InstructionState::Acknowledged).await;
    upstream.stop().await;

    let cancelling = TestApp::spawn_without_dispatcher(&db).await;
    cancelling
        .requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: req.request_id.clone(),
            reason: "the person withdrew the request".into(),
        })
        .await
        .unwrap();
    cancelling.stop().await;
    let down = get_request(&downstream, &id).await;
    assert_eq!(down.status, pb::RequestStatus::InProgress as i32);

    let _restarted = TestApp::spawn(&db).await;
    watch_to_end(&downstream.requests, &id).await;
    let down = get_request(&downstream, &id).await;
    assert_eq!(down.status, pb::RequestStatus::Cancelled as i32);
    assert_eq!(down.cancel_reason, "the person withdrew the request");
    // The downstream tells its own processor in turn.
    warehouse.wait_for_calls(2).await;
    assert_eq!(warehouse.cancels().len(), 1);
}

/// A downstream that does not know the token refuses: the instruction
/// escalates at once (retrying cannot help), saying why.
async fn a_downstream_that_refuses_the_caller_escalates(db: TestDb) {
    let Pair {
        upstream,
        downstream,
        dir,
        _down_db,
        ..
    } = pair(&db, Reply::Accepted, 1000).await;
    std::fs::write(dir.path().join("token"), "not-the-token").unwrap();
    let req = submit(&upstream, deletion("federated-hal@example.com")).await;
    let id = &req.instructions[0].instruction_id;
    let escalated = wait_for_state(&upstream, id, pb::InstructionState::Escalated).await;
    assert_eq!(error_codes(&escalated), ["UNAUTHENTICATED"]);
    assert!(all_requests(&downstream).await.is_empty());
}

/// Polls of the downstream are reminders, not deliveries: more polls than
/// `max_attempts` leave the instruction waiting, and a poll lost with the
/// replica that made it (its lease expires) is made again rather than
/// escalated; a second loss spends the delivery budget of two.
async fn a_poll_lost_with_its_replica_is_polled_again(db: TestDb) {
    let clock = ManualClock::new();
    let (
        Pair {
            upstream,
            _down_db,
            dir: _dir,
            ..
        },
        id,
    ) = accepted_downstream(&db, &clock, "federated-lost-poll@example.com").await;
    for polls in 1..=3 {
        clock.advance(Duration::from_secs(2));
        assert_eq!(upstream.dispatcher.run_once().await.unwrap(), 1);
        let polled = wait_for_state(&upstream, &id, pb::InstructionState::Acknowledged).await;
        assert_eq!(
            polled.attempts,
            1 + polls,
            "the submission and {polls} polls"
        );
    }

    lose_a_poll(&upstream, &clock, "group-co").await;
    assert_eq!(upstream.dispatcher.run_once().await.unwrap(), 1);
    let polled = wait_for_state(&upstream, &id, pb::InstructionState::Acknowledged).await;
    assert_eq!(
        polled.attempts, 6,
        "the submission, four polls and the lost one"
    );

    lose_a_poll(&upstream, &clock, "group-co").await;
    upstream.dispatcher.run_once().await.unwrap();
    let escalated = wait_for_state(&upstream, &id, pb::InstructionState::Escalated).await;
    assert_eq!(
        escalated.summary.unwrap().last_error,
        "delivery budget of 2 attempts spent; the last one ended without an answer"
    );
    upstream.stop().await;
}

/// A pair whose upstream is moved by hand on `clock`, its `group-co`
/// polled every second with a retry budget of two, and the id of the
/// instruction of a deletion for `email` the downstream has accepted.
async fn accepted_downstream(db: &TestDb, clock: &ManualClock, email: &str) -> (Pair, String) {
    let pair = pair_with(db, Reply::Accepted, 1000, manual_options(clock), |p| {
        p.retry_policy.as_mut().unwrap().max_attempts = 2;
    })
    .await;
    let req = submit(&pair.upstream, deletion(email)).await;
    let id = req.instructions[0].instruction_id.clone();
    pair.upstream.dispatcher.run_once().await.unwrap();
    wait_for_state(&pair.upstream, &id, pb::InstructionState::Acknowledged).await;
    (pair, id)
}

/// Once the downstream has accepted, a poll that fails (the downstream
/// is away) is still a poll: more failures than `max_attempts` leave the
/// instruction waiting, each asked again after the poll interval, and
/// every one stays in its history.
async fn polls_that_fail_while_the_downstream_is_away_spend_no_budget(db: TestDb) {
    let clock = ManualClock::new();
    let (
        Pair {
            upstream,
            downstream,
            _down_db,
            dir: _dir,
            ..
        },
        id,
    ) = accepted_downstream(&db, &clock, "federated-away@example.com").await;
    // Away: stopped, its port held by a listener that takes connections
    // and drops them, so nothing else this test process starts answers
    // there instead.
    let port = downstream.addr;
    downstream.stop().await;
    let away = tokio::net::TcpListener::bind(port).await.unwrap();
    let _dropping = tokio::spawn(async move {
        while let Ok((connection, _)) = away.accept().await {
            drop(connection);
        }
    });
    polls_fail_without_escalating(&upstream, &clock, &id, 4).await;

    // The escalation time ends them; an operator's re-arm past it clears
    // it, and from then on the budget counts failures again.
    clock.advance(Duration::from_secs(120 * 86400));
    upstream.dispatcher.run_once().await.unwrap();
    wait_for_state(&upstream, &id, pb::InstructionState::Escalated).await;
    upstream
        .instructions
        .clone()
        .retry_instruction(pb::RetryInstructionRequest {
            instruction_id: id.clone(),
        })
        .await
        .unwrap();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(60));
        upstream.dispatcher.run_once().await.unwrap();
    }
    let escalated = wait_for_state(&upstream, &id, pb::InstructionState::Escalated).await;
    let last_error = escalated.summary.unwrap().last_error;
    assert!(last_error.contains("retries exhausted"), "{last_error}");
    upstream.stop().await;
}

/// Once request `id` is closed on `app`: its record, fulfilled, and its
/// access report.
async fn fulfilled(
    app: &TestApp,
    id: &str,
) -> (pb::CompletionRecord, tonic::Streaming<pb::AccessReportPart>) {
    watch_to_end(&app.requests, id).await;
    let closed = record(app, id).await;
    assert_eq!(closed.outcome, pb::OverallOutcome::Fulfilled as i32);
    let report = app
        .requests
        .clone()
        .get_access_report(pb::GetAccessReportRequest {
            request_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    (closed, report)
}

/// What the downstream's processor found comes up with the downstream
/// record: the specific pieces are the upstream instruction's records, in
/// the upstream's own report, and the record counts them. For a
/// categories-only request the downstream report's disclosures come up in
/// their place: the upstream report shows them for the group company,
/// with how many pieces they were made of, and no piece is in it.
async fn a_federated_access_request_brings_the_data_up(db: TestDb) {
    let held = pair(&db, two_pieces(), 1000).await;
    let upstream = &held.upstream;

    let pieces = access("fed-ann@example.com", pb::AccessScope::SpecificPieces);
    let pieces = submit(upstream, pieces).await;
    let (closed, mut report) = fulfilled(upstream, &pieces.request_id).await;
    assert_eq!(closed.lines[0].data_records, 2);
    let mut values = Vec::new();
    while let Some(part) = report.next().await {
        if let Some(pb::access_report_part::Part::Pieces(p)) = part.unwrap().part {
            assert_eq!(p.processor_id, "group-co");
            values.extend(p.records.into_iter().map(|r| r.value));
        }
    }
    assert_eq!(values, ["3 orders in 2026", "prefers green tea"]);

    let categories = access("fed-ben@example.com", pb::AccessScope::Categories);
    let categories = submit(upstream, categories).await;
    let (closed, report) = fulfilled(upstream, &categories.request_id).await;
    // The pieces the disclosures were made of, which an orchestrator
    // further up a chain reads as something to carry.
    assert_eq!(closed.lines[0].data_records, 2);
    let disclosed = disclosures_in(report, "group-co").await;
    assert_eq!(disclosed, [two_pieces_disclosed(), two_pieces_disclosed()]);
}

/// A chain of federations: the top orchestrator's holding company is the
/// pair's upstream, whose group company is the pair's downstream. A
/// categories-only request at the top gets the disclosures of the records
/// two hops down, carried up through the middle.
async fn a_chain_of_federations_carries_categories_to_the_top(db: TestDb) {
    let held = pair(&db, two_pieces(), 1000).await;
    let middle = &held.upstream;
    let top_db = TestDb::like(&db).await;
    let top = TestApp::spawn(&top_db).await;
    let endpoint = format!("http://{}", middle.addr);
    register(&top, dsr_processor("holding-co", &endpoint, 1000)).await;

    let categories = access("fed-cy@example.com", pb::AccessScope::Categories);
    let categories = submit(&top, categories).await;
    let (closed, report) = fulfilled(&top, &categories.request_id).await;
    assert_eq!(closed.lines[0].data_records, 2);
    let disclosed = disclosures_in(report, "holding-co").await;
    assert_eq!(disclosed, [two_pieces_disclosed(), two_pieces_disclosed()]);
    top.stop().await;
}

/// The downstream processor's answer to an access request: two records.
fn two_pieces() -> Reply {
    let piece = |category: &str, value: &str| pb::DataRecord {
        category: category.into(),
        field: "held".into(),
        value: value.into(),
        source: "the consumer".into(),
        disclosed_to: vec!["analytics providers".into()],
        ..Default::default()
    };
    Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Completed as i32,
        records: vec![
            piece("commercial_information", "3 orders in 2026"),
            piece("inferences", "prefers green tea"),
        ],
        ..Default::default()
    })
}

/// What a categories-only report discloses of [`two_pieces`].
fn two_pieces_disclosed() -> pb::Disclosures {
    pb::Disclosures {
        categories: vec!["commercial_information".into(), "inferences".into()],
        sources: vec!["the consumer".into()],
        third_parties: vec!["analytics providers".into()],
        disclosed_for_business_purpose: vec!["commercial_information".into(), "inferences".into()],
        pieces: 2,
        ..Default::default()
    }
}

/// The disclosures of a categories-only `report` whose one processor is
/// `processor`: its part's, then the totals; no pieces.
async fn disclosures_in(
    mut report: tonic::Streaming<pb::AccessReportPart>,
    processor: &str,
) -> Vec<pb::Disclosures> {
    let mut disclosed = Vec::new();
    while let Some(part) = report.next().await {
        match part.unwrap().part {
            Some(pb::access_report_part::Part::Processor(p)) => {
                assert_eq!(p.processor_id, processor);
                disclosed.push(p.disclosures.unwrap());
            }
            Some(pb::access_report_part::Part::Totals(t)) => disclosed.push(t),
            Some(pb::access_report_part::Part::Pieces(_)) => {
                panic!("pieces in a categories report")
            }
            _ => {}
        }
    }
    disclosed
}
