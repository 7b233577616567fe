//! Every transaction takes rows in one order, instruction rows and then
//! request rows, so none waits for another in a cycle. Here the ones that
//! meet on the same requests run at once: the dispatcher's claims (in two
//! steps on PostgreSQL) and the results it records for a push processor,
//! a pull processor's pulls and completions, and cancels. None fails, and
//! every request ends with its record.

use std::time::Duration;

use dsr_orchestrator::pb;
use tonic::Code;

use crate::backends;
use crate::harness::*;

backends!(claims_results_pulls_and_cancels_at_once_all_finish);

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
