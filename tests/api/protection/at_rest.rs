//! Sealed at rest: the database holds no identifier, no returned data
//! record and no unkeyed fingerprint in the clear, yet everything reads
//! back through the API.

use dsr_orchestrator::pb;

use super::*;
use crate::backends;

backends!(nothing_personal_is_stored_in_the_clear);

/// Deletions, an open request and an access answer with data, all
/// through the server; then the database read with SQL.
async fn nothing_personal_is_stored_in_the_clear(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("vendor", &fake.endpoint())).await;
    let token = register(&app, pull_processor("archive", 60_000)).await;

    let mut done = deletion_of("Zelda.Quux@example.org", "+1 555 867 5309", "Zelda Quux");
    done.processor_ids = vec!["vendor".into()];
    let done = submit(&app, done).await;
    watch_to_end(&app.requests, &done.request_id).await;
    // Delivered with its identity: the payload opens for delivery.
    assert_eq!(
        fake.deliveries()[0].subject_identities[0].value,
        "Zelda.Quux@example.org"
    );
    // Final, its instruction is never sent again: its payload went with
    // the outcome, before the request's erasure.
    assert_eq!(
        db.texts(&format!(
            "select payload from instructions where request_id = '{}'",
            done.request_id
        ))
        .await,
        [[None::<String>]]
    );

    let mut access = deletion("yorick.vex@example.org");
    access.kind = pb::RequestKind::Access as i32;
    access.access_scope = pb::AccessScope::SpecificPieces as i32;
    access.processor_ids = vec!["archive".into()];
    let access = submit(&app, access).await;
    let pulled = pull(&app, &token, 1).await;
    assert_eq!(
        pulled[0].subject_identities[0].value,
        "yorick.vex@example.org"
    );
    app.instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: pulled[0].instruction_id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    records: vec![pb::DataRecord {
                        category: "identifiers".into(),
                        value: "loyalty card QX-771-SECRET".into(),
                        source: "store visits".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    // Still open: its payload waits to be pulled.
    let mut open = deletion("xena.wolt@example.org");
    open.processor_ids = vec!["archive".into()];
    submit(&app, open).await;

    assert_nowhere(
        &db,
        &[
            "zelda.quux@example.org",
            "867 5309",
            "zelda quux",
            "yorick.vex@example.org",
            "xena.wolt@example.org",
            "QX-771-SECRET",
        ],
    )
    .await;
    let texts = stored_texts(&db).await;
    let sealed = |column: &str| {
        texts
            .iter()
            .filter(|(c, _)| c == column)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(sealed("requests.subject").len(), 3);
    for column in [
        "requests.subject",
        "instructions.payload",
        "instructions.sealed_records",
    ] {
        let values = sealed(column);
        assert!(!values.is_empty(), "{column}");
        assert!(
            values.iter().all(|v| v.starts_with("v1:test:")),
            "{column}: {values:?}"
        );
    }
    for fingerprint in sealed("requests.fingerprint") {
        assert!(
            fingerprint.starts_with("h:") && fingerprint.len() == 66,
            "{fingerprint}"
        );
    }

    // What is sealed still reads back where the API shows it.
    let listed = app
        .instructions
        .clone()
        .list_instructions(pb::ListInstructionsRequest {
            request_id: access.request_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let records = &listed.instructions[0].result.as_ref().unwrap().records;
    assert_eq!(records[0].value, "loyalty card QX-771-SECRET");
    assert_eq!(
        record(&app, &access.request_id).await.lines[0].data_records,
        1
    );
    // A repeated answer is still the same answer.
    app.instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: pulled[0].instruction_id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    records: vec![pb::DataRecord {
                        category: "identifiers".into(),
                        value: "loyalty card QX-771-SECRET".into(),
                        source: "store visits".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("idempotent");
    app.stop().await;
}
