//! Test 8, crash safety: an orchestrator dies abruptly mid-fan-out with
//! leases outstanding; a new one on the same database finishes the work.
//! Every instruction ends terminal, every request gets exactly one record,
//! and the only duplicates processors see are redeliveries of the same
//! instruction id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::{Application, Options};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::backends;
use crate::harness::app::test_config;
use crate::harness::*;

backends!(crash_mid_fan_out_loses_nothing);

/// An orchestrator on a runtime of its own, so that it can be killed the
/// way a crash kills a process: every task dropped at its next await, no
/// graceful anything.
struct Doomed {
    kill: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn spawn_doomed(db: &TestDb) -> (std::net::SocketAddr, Doomed) {
    let config = test_config(db);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Application::build(&config, Options::default())
                .await
                .unwrap();
            addr_tx.send(app.addr()).unwrap();
            tokio::select! {
                _ = app.run_until_stopped(CancellationToken::new()) => {}
                _ = killed => {}
            }
        });
        // Dropping every task (and with them the store and its SQLite file
        // lock) is what the end of a crashed process does.
        rt.shutdown_timeout(std::time::Duration::from_secs(10));
    });
    (addr_rx.recv().unwrap(), Doomed { kill, thread })
}

async fn crash_mid_fan_out_loses_nothing(db: TestDb) {
    const REQUESTS: usize = 10;
    let names = ["alpha", "bravo", "charlie"];
    let mut fakes = Vec::new();
    for _ in names {
        fakes.push(FakeProcessor::start(Reply::Hang).await);
    }

    // First life: register, submit, let every delivery start and hang.
    let (addr, doomed) = spawn_doomed(&db);
    let ch = crate::harness::app::channel(addr).await;
    let mut processors = pb::processor_service_client::ProcessorServiceClient::new(ch.clone());
    let mut requests = pb::request_service_client::RequestServiceClient::new(ch);
    for (name, fake) in names.iter().zip(&fakes) {
        processors
            .register_processor(pb::RegisterProcessorRequest {
                processor: Some(push_processor(name, &fake.endpoint())),
            })
            .await
            .unwrap();
    }
    let mut submitted = Vec::new();
    for n in 0..REQUESTS {
        let r = requests
            .submit_request(deletion(&format!("p{n}@example.com")))
            .await
            .unwrap()
            .into_inner();
        submitted.push(r);
    }
    for fake in &fakes {
        fake.wait_for_calls(REQUESTS).await;
    }
    // Crash, with every lease outstanding.
    doomed.kill.send(()).unwrap();
    tokio::task::spawn_blocking(move || doomed.thread.join().unwrap())
        .await
        .unwrap();
    for fake in &fakes {
        fake.set_default(Reply::done(pb::Outcome::Completed));
        fake.release();
    }

    // Second life, on the same database, with a clock we move past the
    // dead dispatcher's leases.
    let clock = ManualClock::new();
    let options = manual_options(&clock);
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    let mut passes = 0;
    loop {
        let open = app
            .requests
            .clone()
            .list_requests(pb::ListRequestsRequest {
                status: pb::RequestStatus::InProgress as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .requests
            .len();
        if open == 0 {
            break;
        }
        passes += 1;
        assert!(passes <= 5, "work not finished after {passes} passes");
        clock.advance(Duration::from_secs(10));
        app.dispatcher.run_once().await.unwrap();
    }

    // Every request completed, with exactly one record.
    for r in &submitted {
        let rec = record(&app, &r.request_id).await;
        assert_eq!(rec.outcome(), pb::OverallOutcome::Fulfilled);
        assert_eq!(rec.lines.len(), names.len());
        assert!(
            rec.lines
                .iter()
                .all(|l| l.state() == pb::InstructionState::Completed)
        );
    }
    let count_sql = "select count(*) as n from completion_records";
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let n: i64 = sqlx::query(count_sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(n as usize, REQUESTS);
    pool.close().await;

    // Processors saw each instruction twice, with the same id: attempt 1
    // (lost in the crash) and attempt 2 (the redelivery). Nothing else.
    let expected: BTreeSet<String> = submitted
        .iter()
        .flat_map(|r| r.instructions.iter().map(|i| i.instruction_id.clone()))
        .collect();
    let mut per_id: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for fake in &fakes {
        for d in fake.deliveries() {
            per_id.entry(d.instruction_id).or_default().push(d.attempt);
        }
    }
    assert_eq!(per_id.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let redeliveries: usize = per_id.values().map(|a| a.len() - 1).sum();
    for attempts in per_id.values() {
        assert_eq!(attempts, &[1, 2]);
    }
    println!(
        "crash test: {} instructions, {redeliveries} redeliveries after the crash",
        expected.len()
    );
    app.stop().await;
}
