//! Every transaction takes rows in one order, instruction rows and then
//! request rows, so none waits for another in a cycle. Here the ones that
//! meet on the same requests run at once: the dispatcher's claims (in two
//! steps on PostgreSQL) and the results it records for a push processor,
//! a pull processor's pulls and completions, and cancels. None fails, and
//! every request ends with its record. Two escalations that read one
//! request's history before recording their changes, lined up on its row
//! lock, take turns rather than deadlock, and a claim that reads some
//! requests' history locks every request row it records in one go.

use std::time::Duration;

use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::domain::ProcessorId;
use dsr_orchestrator::pb;
use dsr_orchestrator::store::Budget;
use tonic::Code;

use crate::harness::*;
use crate::{backends, postgres_only};

backends!(claims_results_pulls_and_cancels_at_once_all_finish);
postgres_only!(
    escalations_of_one_request_that_read_its_history_take_turns,
    a_one_step_claim_locks_its_requests_in_one_statement,
    a_one_step_claim_that_escalates_locks_its_requests_in_one_statement,
);

/// Requests submitted.
const REQUESTS: usize = 120;

/// Whether every request is finished.
async fn all_finished(app: &TestApp) -> bool {
    all_requests(app).await.iter().all(|r| {
        matches!(
            r.status(),
            pb::RequestStatus::Completed | pb::RequestStatus::Cancelled
        )
    })
}

/// Pulls and completes `mainframe`'s instructions until every request is
/// finished; a completion may find its instruction cancelled meanwhile.
async fn pull_and_complete(app: &TestApp, token: &str) -> usize {
    let mut completed = 0;
    loop {
        let batch = pull(app, token, 5).await;
        if batch.is_empty() {
            if all_finished(app).await {
                return completed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for i in batch {
            let done = app
                .instructions
                .clone()
                .complete_instruction(authed(
                    token,
                    pb::CompleteInstructionRequest {
                        instruction_id: i.instruction_id,
                        result: result(pb::Outcome::Completed),
                    },
                ))
                .await;
            match done {
                Ok(_) => completed += 1,
                Err(s) if s.code() == Code::FailedPrecondition => {}
                Err(s) => panic!("a completion failed: {s:?}"),
            }
        }
    }
}

/// Cancels `ids`; a request may have finished first.
async fn cancel_all(app: &TestApp, ids: &[String]) -> usize {
    let mut cancelled = 0;
    for id in ids {
        let done = app
            .requests
            .clone()
            .cancel_request(pb::CancelRequestRequest {
                request_id: id.clone(),
                reason: "withdrawn".into(),
            })
            .await;
        match done {
            Ok(_) => cancelled += 1,
            Err(s) if s.code() == Code::FailedPrecondition => {}
            Err(s) => panic!("a cancel failed: {s:?}"),
        }
    }
    cancelled
}

async fn claims_results_pulls_and_cancels_at_once_all_finish(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let token = register(&app, pull_processor("mainframe", 60_000)).await;
    let mut ids = Vec::with_capacity(REQUESTS);
    for n in 0..REQUESTS {
        ids.push(
            submit(&app, deletion(&format!("person{n}@example.com")))
                .await
                .request_id,
        );
    }
    // A third of them cancelled, by two callers at once, while two pull
    // the processor's instructions and the dispatcher delivers.
    let chosen: Vec<String> = ids.iter().step_by(3).cloned().collect();
    let (first, second) = chosen.split_at(chosen.len() / 2);
    let all = async {
        tokio::join!(
            pull_and_complete(&app, &token),
            async {
                let (a, b) = tokio::join!(cancel_all(&app, first), cancel_all(&app, second));
                a + b
            },
            pull_and_complete(&app, &token),
        )
    };
    let (pulled, cancelled, pulled_too) = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("every request finished within two minutes");
    let completed_by_pull = all_instructions(&app)
        .await
        .iter()
        .filter(|i| i.processor_id == "mainframe" && i.state() == pb::InstructionState::Completed)
        .count();
    assert_eq!(
        completed_by_pull,
        pulled + pulled_too,
        "each completion answered OK, once"
    );
    for id in &ids {
        let record = record(&app, id).await;
        assert_eq!(record.lines.len(), 2, "a line per processor");
        let trail = verify_trail(&app, id).await;
        assert!(trail.intact && trail.record_checked, "{trail:?}");
    }
    let finished = all_requests(&app).await;
    let by_cancel = finished
        .iter()
        .filter(|r| r.status() == pb::RequestStatus::Cancelled)
        .count();
    assert_eq!(
        by_cancel, cancelled,
        "each cancel that succeeded, and no other"
    );
    app.stop().await;
}

/// Two processors allowing one delivery each, whose leases of one request
/// a dead replica took and never sent, escalate at once (two replicas'
/// passes): each transaction locks its instruction, reads the request's
/// history to see whether its lease was sent, closes the lease's delivery
/// attempt, then records the change on the request row. One session holds
/// that row and another the attempts; the first lets go once both
/// escalations wait for it, the second once both wait past the row.
/// Were the history read under a shared lock, both would hold it then,
/// and each would wait for the other's to end before taking the update
/// lock: PostgreSQL aborts one as a deadlock. Taken for update, the
/// second waits for the first, and both escalate, neither with a delivery
/// time, over an intact trail.
async fn escalations_of_one_request_that_read_its_history_take_turns(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    let names = ["alpha", "beta"].map(|n| ProcessorId::parse(n).unwrap());
    for name in &names {
        let mut processor = push_processor(name.as_str(), &fake.endpoint());
        processor.retry_policy.as_mut().unwrap().max_attempts = 1;
        register(&app, processor).await;
    }
    let id = submit(&app, deletion("twice@example.com")).await.request_id;
    let orders = names.each_ref().map(|processor| claim_order(processor, 1));
    let dead = app.store.lease_many(&orders, "dead-replica", clock.now());
    let dead = dead.await.unwrap();
    assert_eq!(dead.claims.iter().map(Vec::len).sum::<usize>(), 2);
    drop(dead);
    clock.advance(Duration::from_secs(61));

    let (mut row, row_pid) = db.hold_request(&id).await;
    let (mut attempts, _) = db.open_transaction().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "select 1 from delivery_attempts a join instructions i on i.id = a.instruction_id \
         where i.request_id = '{id}' for update of a"
    )))
    .execute(&mut attempts)
    .await
    .unwrap();
    let now = clock.now();
    let store = &app.store;
    let escalate = |processor| async move {
        let budget = Budget {
            processor,
            max_reminders: 3,
            max_attempts: 1,
            polls: false,
        };
        store.escalate_overdue(&[budget], now).await
    };
    // At least two sessions of this database waiting for a lock held by
    // another (`blocked`, an SQL condition on `a.pid`).
    let waiting = |blocked: &str| {
        format!(
            "(select count(*) from pg_stat_activity a where a.datname = current_database() \
             and a.wait_event_type = 'Lock' and {blocked}) >= 2"
        )
    };
    let release = async {
        // Both escalations wait to lock the request row.
        let on_row = waiting("a.query like 'select id from requests where %'");
        assert!(db.until_waiting(&on_row, "").await, "both wait for the row");
        sqlx::raw_sql("rollback").execute(&mut row).await.unwrap();
        // Both wait past it: for the attempts, or one for the other.
        let past_row = waiting(
            "cardinality(pg_blocking_pids(a.pid)) > 0 \
             and not (cast($1 as int) = any(pg_blocking_pids(a.pid)))",
        );
        let past = db.until_waiting(&past_row, &row_pid.to_string()).await;
        assert!(past, "both wait past the row");
        sqlx::raw_sql("rollback")
            .execute(&mut attempts)
            .await
            .unwrap();
    };
    let (first, second, ()) = tokio::join!(escalate(&names[0]), escalate(&names[1]), release);
    assert_eq!(first.expect("no deadlock"), 1);
    assert_eq!(second.expect("no deadlock"), 1);

    let request = get_request(&app, &id).await;
    for instruction in &request.instructions {
        assert_eq!(instruction.state(), pb::InstructionState::Escalated);
        assert_eq!(instruction.first_instructed_at, None);
    }
    assert!(verify_trail(&app, &id).await.intact);
    assert!(fake.deliveries().is_empty());
    app.stop().await;
}

/// A request id that sorts before [`HIGH`].
const LOW: &str = "10000000-0000-4000-8000-000000000000";
/// A request id that sorts after [`LOW`].
const HIGH: &str = "f0000000-0000-4000-8000-000000000000";

/// A deletion for `email` with request id `id`.
fn with_id(id: &str, email: &str) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        request_id: id.to_string(),
        ..deletion(email)
    }
}

/// Pulls with request [`LOW`]'s row held by another session, and checks,
/// once the pull waits for it, that [`HIGH`]'s row is free: the pull took
/// its request rows in one statement, in id order, so it waits holding
/// neither. Had it taken some of them first and the others later, it
/// could hold the higher row while it waited for the lower, and a
/// transaction taking both in order (a claim's history step) could wait
/// for it in turn: a deadlock. Returns what the pull leased.
async fn pull_holding_neither(db: &TestDb, app: &TestApp, token: &str) -> Vec<pb::Instruction> {
    let (mut holder, pid) = db.hold_request(LOW).await;
    let probe = async {
        assert!(
            db.someone_waits_for(pid).await,
            "the pull waits for the row"
        );
        let (mut other, _) = db.open_transaction().await;
        let free = sqlx::query("select id from requests where id = $1 for update nowait")
            .bind(HIGH)
            .execute(&mut other)
            .await;
        sqlx::raw_sql("rollback").execute(&mut other).await.unwrap();
        sqlx::raw_sql("rollback")
            .execute(&mut holder)
            .await
            .unwrap();
        free
    };
    let (pulled, free) = tokio::join!(pull(app, token, 10), probe);
    free.expect("the higher row is free while the pull waits for the lower");
    pulled
}

/// A pull (a claim in one transaction) leasing a first delivery of one
/// request and a redelivery of another reads the redelivery's history to
/// see whether its lease was sent, and records both: it takes both rows
/// before that read.
async fn a_one_step_claim_locks_its_requests_in_one_statement(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    submit(&app, with_id(HIGH, "high@example.com")).await;
    assert_eq!(pull(&app, &token, 10).await.len(), 1);
    clock.advance(Duration::from_secs(61));
    submit(&app, with_id(LOW, "low@example.com")).await;

    let pulled = pull_holding_neither(&db, &app, &token).await;
    assert_eq!(
        pulled.len(),
        2,
        "the new one and the one whose lease expired"
    );
    let attempts: Vec<u32> = pulled.iter().map(|i| i.attempts).collect();
    assert!(attempts.contains(&2), "{attempts:?}");
    app.stop().await;
}

/// A pull leasing two first deliveries, one of which it escalates because
/// its payload does not open, records the escalation after the other's
/// delivery: it takes both rows first, though it reads no history.
async fn a_one_step_claim_that_escalates_locks_its_requests_in_one_statement(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    submit(&app, with_id(HIGH, "high@example.com")).await;
    let low = submit(&app, with_id(LOW, "low@example.com")).await;
    let unsendable = low.instructions[0].instruction_id.clone();
    db.execute(&format!(
        "update instructions set payload = 'v1:gone:AAAA' where id = '{unsendable}'"
    ))
    .await;

    let pulled = pull_holding_neither(&db, &app, &token).await;
    assert_eq!(pulled.len(), 1, "the one that opens");
    wait_for_state(&app, &unsendable, pb::InstructionState::Escalated).await;
    app.stop().await;
}
