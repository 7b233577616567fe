//! Several write transactions in flight at once (`--write-transactions`):
//! intake and the recorder each keep more than one batch open on
//! PostgreSQL (SQLite writes one at a time whatever the setting), and
//! every guarantee holds: each acknowledged request is stored once, each
//! instruction delivered once, each request closed by exactly one record
//! over a gap-free, intact audit trail; one batch waiting on a lock
//! does not hold up the next; a result (or a cancel notice's answer)
//! waiting to be written leaves its slot of the replica's to the next
//! delivery, and no more results wait than `--max-in-flight`; while
//! callers queue, results waiting to be written count against the hold;
//! a breaker's probe closes it whatever the recorder waits for.

use std::collections::HashSet;
use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::{Application, Options};
use dsr_orchestrator::store::Backend;

use crate::harness::app::test_config;
use crate::harness::*;
use crate::{backends, postgres_only};

backends!(
    several_write_transactions_lose_nothing_and_record_once,
    write_transactions_need_connections_to_hold_them,
);
postgres_only!(
    a_batch_that_waits_does_not_hold_up_the_next,
    a_result_being_written_leaves_its_slot_to_the_next_delivery,
    a_cancel_notice_being_written_leaves_its_slot_to_the_next_delivery,
    results_waiting_to_be_written_are_bounded_by_max_in_flight,
    results_being_written_count_against_the_hold,
    a_probes_answer_closes_the_breaker_while_results_wait_to_be_written,
);

async fn several_write_transactions_lose_nothing_and_record_once(db: TestDb) {
    const CLIENTS: usize = 16;
    const EACH: usize = 8;
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.write_transactions = 3;
        c.db_max_connections = 9;
        c.rate_limit = 1_000_000.0;
    })
    .await;
    let writers = match app.store.backend() {
        Backend::Postgres => 3,
        Backend::Sqlite => 1,
    };
    assert_eq!(app.store.batch_writers(), writers);
    let mut fakes = Vec::new();
    for id in ["group-co", "platform-vendor", "distributor"] {
        let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
        register(&app, push_processor(id, &fake.endpoint())).await;
        fakes.push(fake);
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let client = app.requests.clone();
        clients.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..EACH {
                let req = deletion(&format!("writer-{c}-{n}@example.com"));
                let answer = client.clone().submit_request(req).await.unwrap();
                ids.push(answer.into_inner().request_id);
            }
            ids
        });
    }
    let mut ids = Vec::new();
    while let Some(mine) = clients.join_next().await {
        ids.extend(mine.unwrap());
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), CLIENTS * EACH);

    for id in &ids {
        let events = watch_to_end(&app.requests, id).await;
        assert_eq!(
            events.last().unwrap().r#type(),
            pb::RequestEventType::Completed
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        assert_eq!(record(&app, id).await.lines.len(), 3);
        let check = verify_trail(&app, id).await;
        assert!(check.intact && check.record_checked, "{check:?}");
    }
    for fake in &fakes {
        let delivered: HashSet<String> = fake
            .deliveries()
            .into_iter()
            .map(|d| d.instruction_id)
            .collect();
        assert_eq!(delivered.len(), CLIENTS * EACH);
        assert_eq!(fake.deliveries().len(), CLIENTS * EACH, "each once");
    }
    let records = db
        .texts("select cast(count(*) as text) from completion_records")
        .await;
    assert_eq!(records[0][0].as_deref(), Some("128"));
    app.stop().await;
}

/// On PostgreSQL, writers that would take every pooled connection are
/// refused at startup; SQLite writes one at a time whatever the setting.
async fn write_transactions_need_connections_to_hold_them(db: TestDb) {
    let tweak = |c: &mut dsr_orchestrator::config::Config| {
        c.write_transactions = 4;
        c.db_max_connections = 8;
    };
    if db.postgres_name().is_some() {
        let mut config = test_config(&db);
        tweak(&mut config);
        let refused = Application::build(&config, Options::default())
            .await
            .err()
            .expect("refused");
        // As the server prints it: the error and its causes.
        let refused = format!("{refused:#}");
        assert!(
            refused.contains("--db-max-connections of at least 11"),
            "{refused}"
        );
    } else {
        let app = TestApp::spawn_with(&db, Options::default(), tweak).await;
        assert_eq!(app.store.batch_writers(), 1);
        app.stop().await;
    }
}

/// Two intake writers overlap: while one batch waits on a lock, the
/// other takes the submissions queued behind it. The lock is a request
/// id: another transaction has inserted a row with it and not committed,
/// so the batch holding a submission of that id waits on the primary key
/// (as an idempotent repeat racing its original does). With one writer
/// the second submission would queue behind the waiting batch until the
/// first gave up (`--db-acquire-timeout`, a minute here), far past the
/// few seconds it is given.
async fn a_batch_that_waits_does_not_hold_up_the_next(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.write_transactions = 2;
        c.db_acquire_timeout = Duration::from_secs(60);
    })
    .await;
    assert_eq!(app.store.batch_writers(), 2);
    register(&app, pull_processor("puller", 60_000)).await;
    let model = submit(&app, deletion("model@example.com")).await.request_id;

    // The held id: a copy of the model's row under it, not committed.
    let held = new_id();
    let (mut holder, holder_pid) = db.open_transaction().await;
    sqlx::query("create temporary table held as select * from requests where id = $1")
        .bind(&model)
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("update held set id = $1")
        .bind(&held)
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::raw_sql("insert into requests select * from held")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut first = deletion("first@example.com");
    first.request_id = held.clone();
    let waiting = {
        let mut client = app.requests.clone();
        tokio::spawn(async move { client.submit_request(first).await })
    };
    // Until a writer's batch waits for the holder.
    assert!(
        db.someone_waits_for(holder_pid).await,
        "the first submission's batch waits for the held id"
    );

    // The other writer takes the next submission and commits it.
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        app.requests
            .clone()
            .submit_request(deletion("second@example.com")),
    )
    .await
    .expect("the second submission is not held up by the waiting batch")
    .unwrap()
    .into_inner();
    assert!(!waiting.is_finished(), "the first batch still waits");
    let stored = db
        .texts("select cast(count(*) as text) from requests")
        .await;
    assert_eq!(
        stored[0][0].as_deref(),
        Some("2"),
        "the model and the second"
    );

    // The holder gives the id up: the waiting batch inserts its request.
    rollback(holder).await;
    let first = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(first.request_id, held);
    for id in [&model, &held, &second.request_id] {
        assert_eq!(get_request(&app, id).await.instructions.len(), 1, "{id}");
    }
    app.stop().await;
}

/// A delivery's slot of the replica's comes free when its processor
/// answers, not once its result is written: while the recorder's batch
/// waits on a lock, the one slot of `--max-in-flight 1` starts the next
/// delivery, and the running dispatcher passes for it as the slot is
/// handed over (its poll interval, an hour, is not what wakes it). The
/// lock is the instruction's row, held by another transaction.
/// (PostgreSQL only: on SQLite the one writer's wait would hold the claim
/// up as well.)
async fn a_result_being_written_leaves_its_slot_to_the_next_delivery(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.max_in_flight = 1;
        c.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    fake.script(vec![Reply::Hang]);
    register(&app, patient_push_processor("vendor", &fake.endpoint())).await;
    let first = submit(&app, deletion("first@example.com")).await;
    fake.wait_for_calls(1).await;
    // The second waits: the one slot is the first's.
    let second = submit(&app, deletion("second@example.com")).await;

    // The claim has committed; the instruction's row is locked before the
    // processor answers, so writing the answer waits.
    let held = instruction_of(&first, "vendor");
    let (mut holder, holder_pid) = db.open_transaction().await;
    lock_instructions(&mut holder, std::slice::from_ref(&held)).await;
    assert_eq!(fake.deliveries().len(), 1, "the second waits for the slot");
    fake.release();
    assert!(
        db.someone_waits_for(holder_pid).await,
        "the recorder's batch waits for the held row"
    );

    // The answer handed its slot on before it reached the recorder.
    fake.wait_for_calls(2).await;
    let state: String = sqlx::query_scalar("select state from instructions where id = $1")
        .bind(&held)
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(state, "DELIVERING", "the first answer is not written yet");

    rollback(holder).await;
    completed_with_records(&app, &[&first, &second]).await;
    app.stop().await;
}

/// At most `--max-in-flight` answers wait for the recorder: while its
/// batch waits on a lock, the first answer holds the one write-back slot
/// of `--max-in-flight 1`, the second answer keeps its global slot, and a
/// third request is not delivered until the lock goes. A database that
/// stalls thus holds a replica to twice `--max-in-flight` deliveries in
/// memory.
async fn results_waiting_to_be_written_are_bounded_by_max_in_flight(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| c.max_in_flight = 1).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    fake.script(vec![Reply::Hang]);
    register(&app, patient_push_processor("vendor", &fake.endpoint())).await;
    let first = submit(&app, deletion("first@example.com")).await;
    fake.wait_for_calls(1).await;
    let (mut holder, holder_pid) = db.open_transaction().await;
    lock_instructions(&mut holder, &[instruction_of(&first, "vendor")]).await;
    fake.release();
    assert!(
        db.someone_waits_for(holder_pid).await,
        "the recorder's batch waits for the held row"
    );

    // The second is delivered in the slot the first handed over, and its
    // answer finds the one write-back slot taken.
    let second = submit(&app, deletion("second@example.com")).await;
    fake.wait_for_calls(2).await;
    let third = submit(&app, deletion("third@example.com")).await;
    app.two_more_passes().await;
    assert_eq!(fake.deliveries().len(), 2, "the third waits for a slot");

    rollback(holder).await;
    fake.wait_for_calls(3).await;
    completed_with_records(&app, &[&first, &second, &third]).await;
    app.stop().await;
}

/// While callers queue to submit, a pass claims only up to a quarter of
/// `--max-in-flight` in the replica's own hands, and results waiting to
/// be written are in its hands: with a held pass's four answers waiting
/// on a lock, the next held pass claims nothing; once they are written,
/// it claims four again.
async fn results_being_written_count_against_the_hold(db: TestDb) {
    let manual = Options {
        run_dispatcher: false,
        ..Options::default()
    };
    let app = TestApp::spawn_with(&db, manual, |c| c.max_in_flight = 16).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    fake.script(vec![Reply::Hang; 4]);
    register(&app, patient_push_processor("vendor", &fake.endpoint())).await;
    for n in 0..8 {
        submit(&app, deletion(&format!("held-{n}@example.com"))).await;
    }
    let queue = app.callers_queuing();

    // A held pass's four deliveries wait for answers whose writing will
    // wait on their rows.
    let first = app.spawn_pass();
    fake.wait_for_calls(4).await;
    let (mut holder, holder_pid) = db.open_transaction().await;
    let sent: Vec<String> = fake
        .deliveries()
        .into_iter()
        .map(|d| d.instruction_id)
        .collect();
    lock_instructions(&mut holder, &sent).await;
    fake.release();
    assert!(
        db.someone_waits_for(holder_pid).await,
        "the recorder's batch waits for the held rows"
    );
    let answered = r#"dsr_delivery_attempts_total{processor="vendor",result="outcome"} 4"#;
    tokio::time::timeout(Duration::from_secs(30), async {
        while !app.admin_get("/metrics").await.1.contains(answered) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all four answers are in");

    // (A pass that claimed would wait for its results behind the lock.)
    let second = tokio::time::timeout(Duration::from_secs(30), app.spawn_pass()).await;
    let second = second.expect("the held pass ends at once").unwrap();
    assert_eq!(second, 0, "four being written fill the hold");
    rollback(holder).await;
    assert_eq!(first.await.unwrap(), 4);
    assert_eq!(
        app.spawn_pass().await.unwrap(),
        4,
        "written, they leave the hold"
    );
    drop(queue);
    app.stop().await;
}

/// A cancel notice, too, hands its slot of the replica's on when its
/// processor answers: while the notice's row is locked by another
/// transaction, so that its answer cannot be written, the one slot of
/// `--max-in-flight 1` delivers the next request.
async fn a_cancel_notice_being_written_leaves_its_slot_to_the_next_delivery(db: TestDb) {
    let app = TestApp::spawn_with(&db, Options::default(), |c| {
        c.max_in_flight = 1;
        c.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let fake = FakeProcessor::start(Reply::Accepted).await;
    register(&app, patient_push_processor("vendor", &fake.endpoint())).await;
    let withdrawn = submit(&app, deletion("withdrawn@example.com")).await;
    let notified = instruction_of(&withdrawn, "vendor");
    wait_for_state(&app, &notified, pb::InstructionState::Acknowledged).await;

    // The notice is sent and waits for its answer in the one slot.
    fake.hang_cancels();
    cancel(&app, &withdrawn.request_id, "consumer withdrew the request").await;
    fake.wait_for_calls(2).await;
    let (mut holder, holder_pid) = db.open_transaction().await;
    sqlx::query("select instruction_id from cancel_notices where instruction_id = $1 for update")
        .bind(&notified)
        .execute(&mut holder)
        .await
        .unwrap();
    let next = submit(&app, deletion("next@example.com")).await;
    fake.release();
    assert!(
        db.someone_waits_for(holder_pid).await,
        "writing the notice's answer waits for its held row"
    );

    // The answered notice handed its slot on before its row was written.
    fake.wait_for_calls(3).await;
    assert_eq!(
        fake.deliveries()[1].instruction_id,
        instruction_of(&next, "vendor")
    );
    let unwritten: i64 = sqlx::query_scalar("select count(*) from cancel_notices")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    assert_eq!(unwritten, 1, "the notice's answer is not written yet");

    rollback(holder).await;
    wait_for_state(
        &app,
        &instruction_of(&next, "vendor"),
        pb::InstructionState::Acknowledged,
    )
    .await;
    assert_eq!(fake.cancels().len(), 1);
    app.stop().await;
    let left = db.texts("select instruction_id from cancel_notices").await;
    assert!(left.is_empty(), "the notice is done once its row is free");
}

/// A probe's answer closes its breaker before the delivery waits for a
/// write-back slot: with `--max-in-flight 1` and another processor's
/// result stuck behind a row lock in the recorder, the probe that answers
/// cannot hand its slot over, yet the breaker is closed, within the
/// probe's lease, not once the database lets the recorder go on.
async fn a_probes_answer_closes_the_breaker_while_results_wait_to_be_written(db: TestDb) {
    let clock = ManualClock::new();
    let manual = manual_options(&clock);
    let app = TestApp::spawn_with(&db, manual, |c| {
        c.max_in_flight = 1;
        c.breaker_failures = 1;
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    let down = FakeProcessor::start(Reply::Error(tonic::Code::Unavailable)).await;
    let steady = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    steady.script(vec![Reply::Hang]);
    register(&app, fragile("fragile", &down.endpoint())).await;
    register(&app, patient_push_processor("vendor", &steady.endpoint())).await;
    let only = |email: &str, processor: &str| pb::SubmitRequestRequest {
        processor_ids: vec![processor.into()],
        ..deletion(email)
    };
    let probed = submit(&app, only("probed@example.com", "fragile")).await;
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1);
    let state = || async { breaker(&app, "fragile").await.map(|b| b.state()) };
    assert_eq!(state().await, Some(pb::circuit_breaker::State::Open));

    // The vendor's answer waits in the recorder, holding the one
    // write-back slot.
    let stuck = submit(&app, only("stuck@example.com", "vendor")).await;
    let first = app.spawn_pass();
    steady.wait_for_calls(1).await;
    let (mut holder, holder_pid) = db.open_transaction().await;
    lock_instructions(&mut holder, &[instruction_of(&stuck, "vendor")]).await;
    steady.release();
    assert!(db.someone_waits_for(holder_pid).await);

    down.set_default(Reply::done(pb::Outcome::Completed));
    clock.advance(Duration::from_secs(61));
    let second = app.spawn_pass();
    down.wait_for_calls(2).await;
    let closed = [pb::circuit_breaker::State::Closed];
    let what = "the probe's answer closes the breaker while the recorder waits";
    until_breaker(&app, "fragile", &closed, what).await;

    rollback(holder).await;
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(second.await.unwrap(), 1);
    let done = pb::InstructionState::Completed;
    wait_for_state(&app, &instruction_of(&probed, "fragile"), done).await;
    completed_with_records(&app, &[&stuck]).await;
    app.stop().await;
}

/// Takes the row locks of instructions `ids` in `holder`'s transaction.
async fn lock_instructions(holder: &mut sqlx::PgConnection, ids: &[String]) {
    sqlx::query("select id from instructions where id = any($1) for update")
        .bind(ids)
        .execute(holder)
        .await
        .unwrap();
}

/// Ends `holder`'s transaction, and with it the locks it held.
async fn rollback(mut holder: sqlx::PgConnection) {
    sqlx::raw_sql("rollback")
        .execute(&mut holder)
        .await
        .unwrap();
}

/// Waits until each of `requests`' one instruction (to `vendor`) is
/// COMPLETED, and checks each request's record.
async fn completed_with_records(app: &TestApp, requests: &[&pb::DataSubjectRequest]) {
    for req in requests {
        let id = instruction_of(req, "vendor");
        wait_for_state(app, &id, pb::InstructionState::Completed).await;
        assert_eq!(record(app, &req.request_id).await.lines.len(), 1);
    }
}
