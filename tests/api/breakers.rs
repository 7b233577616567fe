//! Circuit breakers: a processor that keeps failing is left alone for a
//! cool-down, probed, and resumed; the state is in the database, shown by
//! every replica, and an operator may close it by hand.

use std::sync::Arc;
use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::domain::ProcessorId;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use dsr_orchestrator::store::{Store, StoreOptions};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(
    a_failing_processor_is_left_alone_then_probed_and_resumed,
    an_operator_closes_a_breaker_by_hand,
    a_probe_this_replica_could_not_send_leaves_the_breaker_open,
    a_failed_probe_spends_none_of_the_instructions_budget,
    a_pass_with_nothing_to_probe_leaves_the_probe_free,
    failures_of_this_replicas_own_settings_do_not_open_the_breaker,
    an_open_breaker_only_grows,
);

/// A replica whose breakers open after three failures.
async fn spawn(db: &TestDb, cooldown: Duration) -> TestApp {
    TestApp::spawn_with(db, Options::default(), |c| {
        c.breaker_failures = 3;
        c.breaker_cooldown = cooldown;
    })
    .await
}

/// A replica on a standing clock that passes only when told, whose
/// breakers open at the first failure for 60 s, and processor `fragile`,
/// failing with UNAVAILABLE, allowed `attempts` attempts.
async fn standing(db: &TestDb, attempts: u32) -> (TestApp, ManualClock, FakeProcessor) {
    let clock = ManualClock::new();
    let options = manual_options(&clock);
    let app = TestApp::spawn_with(db, options, |c| {
        c.breaker_failures = 1;
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    let fake = FakeProcessor::start(Reply::Error(Code::Unavailable)).await;
    let mut p = push_processor("fragile", &fake.endpoint());
    p.retry_policy.as_mut().unwrap().max_attempts = attempts;
    register(&app, p).await;
    (app, clock, fake)
}

/// Follows the request until `n` failed deliveries were recorded (each
/// puts the instruction back to PENDING). The dispatcher opens a breaker
/// before it records the failure that opened it.
async fn wait_for_failures(app: &TestApp, request_id: &str, n: usize) {
    let mut stream = app
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: request_id.into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    let counted = async {
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            if e.instruction.as_ref().map(|i| i.state()) == Some(pb::InstructionState::Pending) {
                seen += 1;
                if seen >= n {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), counted)
        .await
        .expect("failures recorded in time");
}

/// Three failures open the breaker; no delivery goes during the cool-down
/// (the retry policy alone would retry within 40 ms); the probe after it
/// succeeds, closes the breaker, and the request completes.
async fn a_failing_processor_is_left_alone_then_probed_and_resumed(db: TestDb) {
    let app = spawn(&db, Duration::from_secs(1)).await;
    let fake = FakeProcessor::start(Reply::Error(Code::Unavailable)).await;
    register(&app, fragile("fragile", &fake.endpoint())).await;
    let req = submit(&app, deletion("breaker-liz@example.com")).await;
    wait_for_failures(&app, &req.request_id, 3).await;
    let open = breaker(&app, "fragile").await.unwrap();
    assert_eq!(open.state(), pb::circuit_breaker::State::Open);
    assert_eq!(open.failures, 3);
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"dsr_circuit_breaker_open{processor="fragile",state="open"} 1"#),
        "{metrics}"
    );

    fake.set_default(Reply::done(pb::Outcome::Completed));
    watch_to_end(&app.requests, &req.request_id).await;
    let listed = all_instructions(&app).await;
    let history = &listed[0].history;
    assert_eq!(history.len(), 4, "three failures, then the probe");
    // The cool-down runs from the breaker's opening (a failure's
    // `finished_at` is stamped when its result is recorded, which under
    // load may come later).
    let opened = open.opened_at.unwrap();
    let probe = history[3].started_at.unwrap();
    let gap =
        (probe.seconds - opened.seconds) * 1_000_000 + i64::from(probe.nanos - opened.nanos) / 1000;
    assert!(gap >= 1_000_000, "probe {gap} µs after the opening");
    assert_eq!(history[3].result, "outcome");
    assert_eq!(
        breaker(&app, "fragile").await.unwrap().state(),
        pb::circuit_breaker::State::Closed
    );
    let (_, metrics) = app.admin_get("/metrics").await;
    for state in ["open", "closed"] {
        let line = format!(
            r#"dsr_circuit_breaker_changes_total{{processor="fragile",state="{state}"}} 1"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    app.stop().await;
}

/// An open breaker is seen by every replica (on PostgreSQL, a second one
/// closes it) and holds deliveries back
/// until an operator closes it; closing one that is not open is refused.
async fn an_operator_closes_a_breaker_by_hand(db: TestDb) {
    let app = spawn(&db, Duration::from_secs(3600)).await;
    let fake = FakeProcessor::start(Reply::Error(Code::Unavailable)).await;
    register(&app, fragile("stuck", &fake.endpoint())).await;
    register(&app, pull_processor("puller", 60_000)).await;
    let mut only = deletion("breaker-mia@example.com");
    only.processor_ids = vec!["stuck".into()];
    let req = submit(&app, only).await;
    wait_for_failures(&app, &req.request_id, 3).await;

    // On PostgreSQL, a second replica (SQLite has one process).
    let second = match db.postgres_name() {
        Some(_) => Some(TestApp::spawn_without_dispatcher(&db).await),
        None => None,
    };
    let other = second.as_ref().unwrap_or(&app);
    let seen = breaker(other, "stuck").await.unwrap();
    assert_eq!(seen.state(), pb::circuit_breaker::State::Open);
    assert!(seen.retry_at.unwrap().seconds > seen.opened_at.unwrap().seconds + 3000);
    assert_eq!(
        breaker(other, "puller").await,
        None,
        "pull processors have none"
    );

    fake.set_default(Reply::done(pb::Outcome::Completed));
    let closed = other
        .processors
        .clone()
        .close_circuit_breaker(pb::CloseCircuitBreakerRequest {
            processor_id: "stuck".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        closed.circuit_breaker.unwrap().state(),
        pb::circuit_breaker::State::Closed
    );
    // The first replica's dispatcher sees it closed and delivers.
    watch_to_end(&app.requests, &req.request_id).await;
    let again = other
        .processors
        .clone()
        .close_circuit_breaker(pb::CloseCircuitBreakerRequest {
            processor_id: "stuck".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    if let Some(second) = second {
        second.stop().await;
    }
    app.stop().await;
}

/// A probe that fails on this replica's side (its request does not read
/// back) tells nothing about the processor: the instruction escalates,
/// nothing was sent, and the breaker is not closed.
async fn a_probe_this_replica_could_not_send_leaves_the_breaker_open(db: TestDb) {
    let (app, clock, fake) = standing(&db, 1).await;
    submit(&app, deletion("probe-ann@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(
        breaker(&app, "fragile").await.unwrap().state(),
        pb::circuit_breaker::State::Open
    );
    // The next instruction is the probe; its request no longer decodes
    // (a value no submission can store).
    let access = submit(
        &app,
        pb::SubmitRequestRequest {
            kind: pb::RequestKind::Access as i32,
            access_scope: pb::AccessScope::Categories as i32,
            ..deletion("probe-ben@example.com")
        },
    )
    .await;
    db.execute(&format!(
        "update requests set submitted_by = 'not an actor' where id = '{}'",
        access.request_id
    ))
    .await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "cooling down");
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "the probe");

    let listed = all_instructions(&app).await;
    let probe = listed
        .iter()
        .find(|i| i.request_id == access.request_id)
        .unwrap();
    assert_eq!(probe.state(), pb::InstructionState::Escalated);
    assert_eq!(error_codes(probe), ["REQUEST_UNREADABLE"]);
    assert_eq!(fake.deliveries().len(), 1, "only the first was sent");
    // Not closed: still waiting for a probe that reaches the processor.
    assert_eq!(
        breaker(&app, "fragile").await.unwrap().state(),
        pb::circuit_breaker::State::HalfOpen
    );
    app.stop().await;
}

/// A probe that reaches the processor and fails gives its attempt back:
/// with a budget of two attempts, the first failure opens the breaker and
/// two failed probes later the instruction is still waiting, not
/// escalated; the probe after the outage completes it. Every attempt stays
/// in its history.
async fn a_failed_probe_spends_none_of_the_instructions_budget(db: TestDb) {
    let (app, clock, fake) = standing(&db, 2).await;
    let req = submit(&app, deletion("probe-cat@example.com")).await;
    let state = || async { all_instructions(&app).await[0].state() };
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let breaker_state = || async { breaker(&app, "fragile").await.unwrap().state() };
    assert_eq!(breaker_state().await, pb::circuit_breaker::State::Open);
    // Each failed probe opens the breaker again, for twice as long, and
    // counts one more failure. The budget spent stays at the first
    // failure's one attempt.
    for (cooldown, failures) in [(60, 2), (120, 3)] {
        clock.advance(Duration::from_secs(cooldown + 1));
        assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "a probe");
        assert_eq!(state().await, pb::InstructionState::Pending);
        let open = breaker(&app, "fragile").await.unwrap();
        assert_eq!(open.state(), pb::circuit_breaker::State::Open);
        assert_eq!(open.failures, failures);
        let spent = db
            .texts("select cast(attempts_since_arm as text) from instructions")
            .await;
        assert_eq!(spent, [[Some("1".to_string())]]);
    }

    fake.set_default(Reply::done(pb::Outcome::Completed));
    clock.advance(Duration::from_secs(241));
    assert_eq!(
        app.dispatcher.run_once().await.unwrap(),
        1,
        "the last probe"
    );
    let listed = all_instructions(&app).await;
    assert_eq!(listed[0].request_id, req.request_id);
    assert_eq!(listed[0].state(), pb::InstructionState::Completed);
    let results: Vec<&str> = listed[0]
        .history
        .iter()
        .map(|h| h.result.as_str())
        .collect();
    assert_eq!(
        results,
        [
            "retryable_error",
            "retryable_error",
            "retryable_error",
            "outcome"
        ]
    );
    assert_eq!(breaker_state().await, pb::circuit_breaker::State::Closed);
    app.stop().await;
}

/// A pass that takes a half-open breaker's probe but claims nothing to
/// send with it (the one instruction due cannot be opened, and escalates)
/// gives the probe back: an instruction due just after is the probe of
/// the next pass, not held until the probe's lease runs out (its push
/// timeout and the lease margin; the clock stands still).
async fn a_pass_with_nothing_to_probe_leaves_the_probe_free(db: TestDb) {
    let (app, clock, fake) = standing(&db, 1).await;
    // The one failure opens the breaker and spends its instruction's
    // budget.
    submit(&app, deletion("probe-dan@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let unreadable = submit(&app, deletion("probe-eli@example.com")).await;
    db.execute(&format!(
        "update instructions set payload = 'not sealed' where request_id = '{}'",
        unreadable.request_id
    ))
    .await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0, "nothing sent");
    let lease = db.texts("select cast(probe_until as text) from circuit_breakers");
    assert_eq!(lease.await, [[None]], "the probe is free again");

    fake.set_default(Reply::done(pb::Outcome::Completed));
    let due = submit(&app, deletion("probe-eve@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "the probe");
    let listed = all_instructions(&app).await;
    let state = |req: &pb::DataSubjectRequest| {
        let i = listed.iter().find(|i| i.request_id == req.request_id);
        i.unwrap().state()
    };
    assert_eq!(state(&unreadable), pb::InstructionState::Escalated);
    assert_eq!(state(&due), pb::InstructionState::Completed);
    assert_eq!(
        breaker(&app, "fragile").await.map(|b| b.state()),
        Some(pb::circuit_breaker::State::Closed)
    );
    app.stop().await;
}

/// A delivery that fails on this replica's own settings (its TLS files
/// cannot be read) is retried, but the processor was never asked: the
/// breaker, set to open at the first failure, stays closed.
async fn failures_of_this_replicas_own_settings_do_not_open_the_breaker(db: TestDb) {
    let options = Options {
        clock: Arc::new(ManualClock::new()),
        run_dispatcher: false,
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, options, |c| c.breaker_failures = 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("processors-ca.crt");
    let mut p = push_processor("misread", "https://localhost:9");
    if let Some(pb::adapter::Kind::Grpc(g)) = p.adapter.as_mut().and_then(|a| a.kind.as_mut()) {
        g.tls = Some(pb::ProcessorTls {
            ca_file: ca_file.display().to_string(),
            ..Default::default()
        });
    }
    register(&app, p).await;
    let req = submit(&app, deletion("misread-ann@example.com")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);

    let listed = all_instructions(&app).await;
    let i = listed
        .iter()
        .find(|i| i.request_id == req.request_id)
        .unwrap();
    assert_eq!(i.state(), pb::InstructionState::Pending, "retried");
    assert_eq!(error_codes(i), ["TLS_FILES"]);
    let state = breaker(&app, "misread")
        .await
        .map_or(pb::circuit_breaker::State::Closed, |b| b.state());
    assert_eq!(state, pb::circuit_breaker::State::Closed);
    app.stop().await;
}

/// An open breaker's count grows with each failure added to it, and its
/// cool-down and next probe only grow: a replica's late threshold count at
/// the base cool-down does not undo a failed probe's doubling (SQLite's
/// `max` and PostgreSQL's `greatest` in the store's upsert).
async fn an_open_breaker_only_grows(db: TestDb) {
    let app = spawn(&db, Duration::from_secs(30)).await;
    register(&app, push_processor("p1", "http://127.0.0.1:1")).await;
    // The store alone from here (a SQLite file takes one server at a time).
    app.stop().await;
    let store = Store::connect(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let id = ProcessorId::parse("p1").unwrap();
    let at = |secs: i64| chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
    let base = Duration::from_secs(30);
    store.open_breaker(&id, 3, base, at(0)).await.unwrap();
    // A probe at 31 s fails: open again for twice as long.
    store.open_breaker(&id, 1, 2 * base, at(31)).await.unwrap();
    // Another replica's late threshold count, at the base cool-down.
    store.open_breaker(&id, 3, base, at(32)).await.unwrap();
    let open = store.breakers().await.unwrap().remove(&id).unwrap();
    assert_eq!(open.failures, 7);
    assert_eq!(open.cooldown, 2 * base);
    assert_eq!(open.retry_at, at(91));
    assert_eq!(open.opened_at, at(0));
    store.close().await;
}
