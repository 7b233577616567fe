//! Horizontal scale-out on PostgreSQL: replicas that share nothing but the
//! database. Concurrent migrations, exactly-once aggregation when the last
//! instructions of a request finish on different replicas at once, watching
//! on one replica what another does, and (in `replicas.rs`) real processes
//! killed with SIGKILL.

use std::sync::Arc;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;
use dsr_orchestrator::store::{Store, StoreOptions};
use sqlx::Row;

use crate::backends;
use crate::harness::*;
use crate::postgres_only;

backends!(last_instructions_finishing_together_write_one_record);
postgres_only!(
    replicas_starting_together_migrate_once,
    processor_changes_through_one_replica_count_at_the_next_submission_on_another,
    watch_on_one_replica_sees_work_done_by_another,
);

/// Several replicas starting at once against an empty database: the
/// migrator's advisory lock lets exactly one apply the migrations and the
/// others find them applied.
async fn replicas_starting_together_migrate_once(db: TestDb) {
    let starts = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { Store::connect(&url, &StoreOptions::default()).await })
    });
    for s in futures::future::join_all(starts).await {
        s.unwrap().expect("every replica starts");
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let n: i64 = sqlx::query("select count(*) as n from _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    let files = std::fs::read_dir("migrations/postgres").unwrap().count();
    assert_eq!(n as usize, files);
    pool.close().await;
}

/// Two replicas (on SQLite, where one process is the rule, two clients of
/// the one replica) complete the last two instructions of many requests at
/// the same moment: every request gets exactly one record, with both lines.
async fn last_instructions_finishing_together_write_one_record(db: TestDb) {
    const REQUESTS: usize = 40;
    let options = || Options {
        clock: Arc::new(ManualClock::new()),
        run_dispatcher: false,
        ..Options::default()
    };
    let one = TestApp::spawn_with(&db, options(), |_| {}).await;
    // SQLite refuses a second process on its file; PostgreSQL takes a
    // second replica.
    let two = if db.url.starts_with("postgres") {
        Some(TestApp::spawn_with(&db, options(), |_| {}).await)
    } else {
        None
    };
    let second = two.as_ref().unwrap_or(&one);
    let a = FakeProcessor::start(Reply::Accepted).await;
    let b = FakeProcessor::start(Reply::Accepted).await;
    let token_a = register(&one, push_processor("left", &a.endpoint())).await;
    let token_b = register(&one, push_processor("right", &b.endpoint())).await;
    let mut requests = Vec::new();
    for n in 0..REQUESTS {
        requests.push(submit(&one, deletion(&format!("r{n}@example.com"))).await);
    }
    while one.dispatcher.run_once().await.unwrap() > 0 {}

    let complete = |app: &TestApp, token: &str, id: &str| {
        let mut client = app.instructions.clone();
        let request = authed(
            token,
            pb::CompleteInstructionRequest {
                instruction_id: id.to_string(),
                result: result(pb::Outcome::Completed),
            },
        );
        async move { client.complete_instruction(request).await.map(|_| ()) }
    };
    let mut calls = Vec::new();
    for r in &requests {
        let left = &r
            .instructions
            .iter()
            .find(|i| i.processor_id == "left")
            .unwrap()
            .instruction_id;
        let right = &r
            .instructions
            .iter()
            .find(|i| i.processor_id == "right")
            .unwrap()
            .instruction_id;
        let (l, rr) = (
            complete(&one, &token_a, left),
            complete(second, &token_b, right),
        );
        calls.push(tokio::spawn(async move { tokio::try_join!(l, rr) }));
    }
    for c in calls {
        c.await.unwrap().expect("both completions accepted");
    }

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let n: i64 = sqlx::query("select count(*) as n from completion_records")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(n as usize, REQUESTS);
    pool.close().await;
    for r in &requests {
        let record = record(second, &r.request_id).await;
        assert_eq!(record.lines.len(), 2);
        assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
        let events = watch_to_end(&one.requests, &r.request_id).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        let terminal = events
            .iter()
            .filter(|e| e.r#type() == pb::RequestEventType::Completed)
            .count();
        assert_eq!(terminal, 1);
    }
    if let Some(two) = two {
        two.stop().await;
    }
    one.stop().await;
}

/// Each replica's intake keeps a copy of the processor registry between
/// submissions: changes made through another replica count from its next
/// submission on, because every batch's statement checks that the copy's
/// generation is still the registry's.
async fn processor_changes_through_one_replica_count_at_the_next_submission_on_another(db: TestDb) {
    let intake = TestApp::spawn_without_dispatcher(&db).await;
    let admin = TestApp::spawn_without_dispatcher(&db).await;
    register(&admin, push_processor("vendor", "http://127.0.0.1:1")).await;
    let first = submit(&intake, deletion("ann@example.com")).await;
    assert_eq!(processors_of(&first), ["vendor"]);

    register(&admin, push_processor("archive", "http://127.0.0.1:1")).await;
    let second = submit(&intake, deletion("bob@example.com")).await;
    assert_eq!(processors_of(&second), ["archive", "vendor"]);

    disable(&admin, "vendor").await;
    let third = submit(&intake, deletion("cy@example.com")).await;
    assert_eq!(processors_of(&third), ["archive"]);
    for r in [&first, &second, &third] {
        assert_eq!(
            processors_of(&get_request(&admin, &r.request_id).await),
            processors_of(r)
        );
    }
    intake.stop().await;
    admin.stop().await;
}

/// A watcher on one replica follows a request whose work another replica
/// does (LISTEN/NOTIFY, with polling as the fallback).
async fn watch_on_one_replica_sees_work_done_by_another(db: TestDb) {
    let watcher = TestApp::spawn_without_dispatcher(&db).await;
    let worker = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    let token = register(&worker, push_processor("vendor", &fake.endpoint())).await;
    let req = submit(&watcher, deletion("peggy@example.com")).await;
    let follow = {
        let client = watcher.requests.clone();
        let id = req.request_id.clone();
        tokio::spawn(async move { watch_to_end(&client, &id).await })
    };
    let id = &req.instructions[0].instruction_id;
    // The worker replica delivers; the processor answers through it.
    wait_for_state(&worker, id, pb::InstructionState::Acknowledged).await;
    worker
        .instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                result: result(pb::Outcome::NoData),
            },
        ))
        .await
        .unwrap();
    let events = follow.await.unwrap();
    let states: Vec<_> = events
        .iter()
        .filter_map(|e| e.instruction.as_ref().map(|i| i.state()))
        .collect();
    assert_eq!(
        states,
        [
            pb::InstructionState::Delivering,
            pb::InstructionState::Acknowledged,
            pb::InstructionState::NoData
        ]
    );
    assert_eq!(
        events.last().unwrap().r#type(),
        pb::RequestEventType::Completed
    );
    worker.stop().await;
    watcher.stop().await;
}
