//! Erasure once done: a finished request's identities, payloads and
//! returned data go (access data after the report window); its record and
//! audit trail stay; nothing is sent for it again.

use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use tonic::Code;

use super::*;
use crate::backends;

backends!(finished_requests_lose_their_personal_data);

/// A deletion is erased once finished; an access request only after its
/// report window; an open one not at all. Afterwards nothing of it can be
/// claimed or pulled, and a late answer is told why it is refused.
async fn finished_requests_lose_their_personal_data(db: TestDb) {
    let clock = ManualClock::new();
    let options = manual_options(&clock);
    let app = TestApp::spawn_with(&db, options, |c| {
        c.erase_interval = Duration::from_millis(20);
    })
    .await;
    let token = register(&app, pull_processor("archive", 60_000)).await;
    let answer = |id: String, records: Vec<pb::DataRecord>| {
        let mut client = app.instructions.clone();
        let request = authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id,
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    records,
                    ..Default::default()
                }),
            },
        );
        async move { client.complete_instruction(request).await }
    };

    let deletion = submit(
        &app,
        deletion_of("wanda.erase@example.org", "+44 20 7946 0000", "Wanda Erase"),
    )
    .await;
    let mut access = crate::harness::deletion("vic.report@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    let access = submit(&app, access).await;
    let open = submit(&app, crate::harness::deletion("uri.open@example.org")).await;
    let pulled = pull(&app, &token, 10).await;
    assert_eq!(pulled.len(), 3);
    let of = |r: &pb::DataSubjectRequest| {
        pulled
            .iter()
            .find(|i| i.request_id == r.request_id)
            .unwrap()
            .instruction_id
            .clone()
    };
    answer(of(&deletion), vec![]).await.unwrap();
    let data = pb::DataRecord {
        category: "identifiers".into(),
        value: "membership TU-1138".into(),
        source: "signup".into(),
        ..Default::default()
    };
    // One more record uploaded in a chunk, sealed in a table of its own.
    upload_one_record(&app, &token, &of(&access)).await;
    answer(of(&access), vec![data.clone()]).await.unwrap();

    let erased = wait_erased(&app, &deletion.request_id).await;
    assert!(erased.identities_erased_at.is_some());
    let ids = |r: &pb::DataSubjectRequest| r.request_id.clone();
    let subject_of = |id: String| {
        let db = &db;
        async move {
            db.texts(&format!("select subject from requests where id = '{id}'"))
                .await[0][0]
                .clone()
        }
    };
    assert_eq!(subject_of(ids(&deletion)).await, None);
    assert_eq!(
        db.texts(&format!(
            "select payload from instructions where request_id = '{}'",
            deletion.request_id
        ))
        .await[0][0],
        None
    );
    // The access request keeps its data for the report, the open one its
    // payload.
    assert!(subject_of(ids(&access)).await.is_some());
    assert!(subject_of(ids(&open)).await.is_some());
    assert_eq!(
        get_request(&app, &access.request_id)
            .await
            .identities_erased_at,
        None
    );
    let listed = |request_id: String| {
        let mut client = app.instructions.clone();
        async move {
            client
                .list_instructions(pb::ListInstructionsRequest {
                    request_id,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .instructions
                .remove(0)
        }
    };
    assert_eq!(listed(ids(&access)).await.result.unwrap().records, [data]);

    // After the report window (7 days by default) the access data goes
    // too, and only the count stays in the record.
    clock.advance(Duration::from_secs(7 * 86400 + 60));
    wait_erased(&app, &access.request_id).await;
    assert!(
        listed(ids(&access))
            .await
            .result
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(
        record(&app, &access.request_id).await.lines[0].data_records,
        2
    );
    assert_eq!(
        db.texts("select cast(count(*) as text) from data_record_chunks")
            .await[0][0]
            .as_deref(),
        Some("0")
    );
    // The report and the export are refused before anything is sent.
    let gone = app
        .requests
        .clone()
        .get_access_report(pb::GetAccessReportRequest {
            request_id: access.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::FailedPrecondition);
    let gone = app
        .requests
        .clone()
        .export_access_data(pb::ExportAccessDataRequest {
            request_id: access.request_id.clone(),
            format: pb::ExportFormat::Json as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        db.texts(&format!(
            "select sealed_records from instructions where request_id = '{}'",
            access.request_id
        ))
        .await[0][0],
        None
    );
    assert!(subject_of(ids(&open)).await.is_some(), "open: kept");
    assert_eq!(
        get_request(&app, &open.request_id)
            .await
            .identities_erased_at,
        None
    );

    // The record and the audit trail stay whole.
    let trail = verify_trail(&app, &deletion.request_id).await;
    assert!(trail.intact && trail.record_checked, "{trail:?}");

    // Nothing is sent for a finished request again: it has nothing left
    // to claim or pull, and a late answer is refused, saying why.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
    let again = pull(&app, &token, 10).await;
    assert!(
        again.iter().all(|i| i.request_id == open.request_id),
        "only the open request's instruction is offered"
    );
    let late = answer(of(&deletion), vec![]).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert!(late.message().contains("erased"), "{late:?}");
    app.stop().await;
}
