//! The access report: the seven disclosures of a right-to-know response,
//! by processor, assembled from what three processors answered, streamed
//! through the real server.

use dsr_orchestrator::pb;
use prost_types::Timestamp;
use tokio_stream::StreamExt;

use crate::backends;
use crate::harness::*;

backends!(
    the_report_discloses_what_each_processor_answered,
    a_categories_only_request_gets_no_specific_pieces,
    reports_are_for_finished_access_requests_of_their_submitter,
    a_processor_uploads_a_hundred_thousand_records_in_chunks,
    the_export_validates_against_its_published_schema,
    a_categories_only_request_has_nothing_to_export,
    processors_are_told_what_the_person_asks,
    a_cancelled_request_has_no_report,
    a_page_of_instructions_shows_the_records_that_open,
);

/// An access request for `email`, asking for `scope`.
fn access(email: &str, scope: pb::AccessScope) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        kind: pb::RequestKind::Access as i32,
        access_scope: scope as i32,
        ..deletion(email)
    }
}

fn piece(category: &str, field: &str, value: &str) -> pb::DataRecord {
    pb::DataRecord {
        category: category.into(),
        field: field.into(),
        value: value.into(),
        source: "the consumer".into(),
        purpose: "providing the service".into(),
        collected_at: Some(Timestamp {
            seconds: 1_767_225_600,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// What the CRM processor holds: three pieces in two categories, one
/// disclosed to payment processors, one sold or shared to ad networks,
/// one in a category of its own.
fn crm_records() -> Vec<pb::DataRecord> {
    let mut email = piece("identifiers", "email", "report-amy@example.com");
    email.disclosed_to = vec!["payment processors".into()];
    let mut clicks = piece("internet_activity", "page_views", "412 views in 2026");
    clicks.source = "our website".into();
    clicks.purpose = "advertising".into();
    clicks.disclosed_to = vec!["advertising networks".into()];
    clicks.sold_or_shared = true;
    let mut tier = piece(
        "other",
        "loyalty_tier",
        "=HYPERLINK(\"http://evil.example\")",
    );
    tier.category_label = "loyalty programme".into();
    vec![email, clicks, tier]
}

/// Three processors: `crm` answers with its records, `archive` holds
/// nothing, `ledger` denies on a ground the law gives.
async fn three_processors(app: &TestApp) -> Vec<FakeProcessor> {
    let crm = FakeProcessor::start(Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Completed as i32,
        records: crm_records(),
        ..Default::default()
    }))
    .await;
    let archive = FakeProcessor::start(Reply::done(pb::Outcome::NoData)).await;
    let ledger = FakeProcessor::start(Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Denied as i32,
        exception: pb::DeletionException::Other as i32,
        explanation: "Cal. Civ. Code 1798.145(a)(1)(E): held for a pending legal claim".into(),
        ..Default::default()
    }))
    .await;
    register(app, push_processor("crm", &crm.endpoint())).await;
    register(app, push_processor("archive", &archive.endpoint())).await;
    register(app, push_processor("ledger", &ledger.endpoint())).await;
    vec![crm, archive, ledger]
}

/// The whole report, part by part.
async fn report(
    app: &TestApp,
    request_id: &str,
) -> Result<Vec<pb::access_report_part::Part>, tonic::Status> {
    let mut stream = app
        .requests
        .clone()
        .get_access_report(pb::GetAccessReportRequest {
            request_id: request_id.into(),
        })
        .await?
        .into_inner();
    let mut parts = Vec::new();
    while let Some(part) = stream.next().await {
        parts.push(part?.part.expect("a part"));
    }
    Ok(parts)
}

fn strings(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

async fn the_report_discloses_what_each_processor_answered(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let _fakes = three_processors(&app).await;
    let req = submit(
        &app,
        access("report-amy@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    watch_to_end(&app.requests, &req.request_id).await;
    let parts = report(&app, &req.request_id).await.unwrap();
    use pb::access_report_part::Part;

    let Part::Header(header) = &parts[0] else {
        panic!("the header first: {:?}", parts[0]);
    };
    assert_eq!(header.request_id, req.request_id);
    assert_eq!(header.kind, pb::RequestKind::Access as i32);
    assert_eq!(header.access_scope, pb::AccessScope::SpecificPieces as i32);
    assert_eq!(header.submitted_at, req.submitted_at);

    // Processors in id order: archive, crm (and its pieces), ledger; then
    // the totals.
    assert_eq!(parts.len(), 6, "{parts:?}");
    let Part::Processor(archive) = &parts[1] else {
        panic!("{:?}", parts[1])
    };
    assert_eq!(archive.processor_id, "archive");
    assert_eq!(archive.state, pb::InstructionState::NoData as i32);
    assert_eq!(archive.disclosures, Some(pb::Disclosures::default()));

    let Part::Processor(crm) = &parts[2] else {
        panic!("{:?}", parts[2])
    };
    assert_eq!(crm.processor_id, "crm");
    assert_eq!(crm.display_name, "crm Ltd.");
    assert_eq!(crm.state, pb::InstructionState::Completed as i32);
    let d = crm.disclosures.as_ref().unwrap();
    assert_eq!(
        strings(&d.categories),
        [
            "identifiers",
            "internet_activity",
            "other: loyalty programme"
        ]
    );
    assert_eq!(strings(&d.sources), ["our website", "the consumer"]);
    assert_eq!(
        strings(&d.purposes),
        ["advertising", "providing the service"]
    );
    assert_eq!(
        strings(&d.third_parties),
        ["advertising networks", "payment processors"]
    );
    assert_eq!(strings(&d.sold_or_shared), ["internet_activity"]);
    assert_eq!(strings(&d.disclosed_for_business_purpose), ["identifiers"]);
    assert_eq!(d.pieces, 3);

    let Part::Pieces(pieces) = &parts[3] else {
        panic!("{:?}", parts[3])
    };
    assert_eq!(pieces.processor_id, "crm");
    assert_eq!(
        pieces.records,
        crm_records(),
        "every field as the processor sent it"
    );

    let Part::Processor(ledger) = &parts[4] else {
        panic!("{:?}", parts[4])
    };
    assert_eq!(ledger.processor_id, "ledger");
    assert_eq!(ledger.state, pb::InstructionState::Denied as i32);
    assert_eq!(ledger.exception, pb::DeletionException::Other as i32);
    assert!(ledger.explanation.starts_with("Cal. Civ. Code 1798.145"));
    assert_eq!(ledger.disclosures, Some(pb::Disclosures::default()));

    let Part::Totals(totals) = &parts[5] else {
        panic!("{:?}", parts[5])
    };
    assert_eq!(Some(totals), crm.disclosures.as_ref());
    app.stop().await;
}

async fn a_categories_only_request_gets_no_specific_pieces(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let _fakes = three_processors(&app).await;
    let req = submit(
        &app,
        access("report-bob@example.com", pb::AccessScope::Categories),
    )
    .await;
    watch_to_end(&app.requests, &req.request_id).await;
    let parts = report(&app, &req.request_id).await.unwrap();
    use pb::access_report_part::Part;
    let Part::Header(header) = &parts[0] else {
        panic!("{:?}", parts[0])
    };
    assert_eq!(header.access_scope, pb::AccessScope::Categories as i32);
    assert!(
        parts.iter().all(|p| !matches!(p, Part::Pieces(_))),
        "{parts:?}"
    );
    let Part::Totals(totals) = parts.last().unwrap() else {
        panic!()
    };
    assert_eq!(totals.pieces, 3);
    assert_eq!(totals.categories.len(), 3);
    app.stop().await;
}

/// An open request, a deletion, and someone else's request have no report
/// for the caller.
async fn reports_are_for_finished_access_requests_of_their_submitter(db: TestDb) {
    let principal = format!(
        "  - principal: other-portal\n    sha256: {}\n    roles: [submitter]\n",
        crate::harness::app::token_hash("other-portal-token")
    );
    let app = TestApp::spawn_authenticated(&db, &principal, |_| {}).await;
    let slow = FakeProcessor::start(Reply::Hang).await;
    register(&app, push_processor("slow", &slow.endpoint())).await;
    let open = submit(
        &app,
        access("report-cid@example.com", pb::AccessScope::Categories),
    )
    .await;
    slow.wait_for_calls(1).await;
    let refused = report(&app, &open.request_id).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    slow.release();
    watch_to_end(&app.requests, &open.request_id).await;
    let other = app.clients(crate::harness::app::Bearer::token("other-portal-token"));
    let hidden = other
        .requests
        .clone()
        .get_access_report(pb::GetAccessReportRequest {
            request_id: open.request_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    slow.set_default(Reply::done(pb::Outcome::Completed));
    let deletion = submit(&app, deletion("report-dan@example.com")).await;
    watch_to_end(&app.requests, &deletion.request_id).await;
    let refused = report(&app, &deletion.request_id).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    app.stop().await;
}

/// A chunk of `n` records numbered from `first`.
fn chunk(instruction_id: &str, index: u32, first: usize, n: usize) -> pb::UploadDataRecordsRequest {
    pb::UploadDataRecordsRequest {
        instruction_id: instruction_id.into(),
        chunk_index: index,
        records: (first..first + n)
            .map(|i| pb::DataRecord {
                category: if i % 2 == 0 {
                    "identifiers"
                } else {
                    "internet_activity"
                }
                .into(),
                field: "event".into(),
                value: format!("event {i}"),
                source: "our website".into(),
                ..Default::default()
            })
            .collect(),
    }
}

/// 100,000 records in 100 chunks over one gRPC stream, one chunk sent
/// twice in it and another again over HTTP, and one refused for an empty
/// value: the instruction holds each kept chunk once, the record line
/// counts them, and the report streams them all in parts of 500.
async fn a_processor_uploads_a_hundred_thousand_records_in_chunks(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let big = FakeProcessor::start(Reply::Accepted).await;
    let token = register(&app, push_processor("big", &big.endpoint())).await;
    let req = submit(
        &app,
        access("report-eve@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;

    let mut chunks: Vec<_> = (0..100u32)
        .map(|c| chunk(&id, c, c as usize * 1000, 1000))
        .collect();
    chunks.insert(8, chunk(&id, 7, 7000, 1000));
    let answer = app
        .instructions
        .clone()
        .upload_data_records(authed(&token, tokio_stream::iter(chunks)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.chunks, answer.records), (100, 100_000));

    // The same chunk again over the HTTP callback API changes nothing.
    let again = serde_json::json!({
        "chunk_index": 0,
        "records": [{"category": "identifiers", "value": "event 0"}],
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answered: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/instructions/{id}/records", app.addr))
        .bearer_auth(&token)
        .json(&again)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answered["chunks"], 100);
    assert_eq!(answered["records"], 100_000);
    // A record without a value is refused, and its chunk not kept.
    let mut blank = chunk(&id, 100, 0, 2);
    blank.records[1].value.clear();
    let refused = app
        .instructions
        .clone()
        .upload_data_records(authed(&token, tokio_stream::iter([blank])))
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["records[1].value"]);
    // So is one collected more than a day from now: a clock or a unit
    // gone wrong (a day ahead is a date east of UTC, or a clock ahead).
    let mut ahead = chunk(&id, 100, 0, 2);
    let now = chrono::Utc::now().timestamp();
    ahead.records[0].collected_at = Some(prost_types::Timestamp {
        seconds: now + 20 * 3600,
        nanos: 0,
    });
    ahead.records[1].collected_at = Some(prost_types::Timestamp {
        seconds: now + 3 * 24 * 3600,
        nanos: 0,
    });
    let refused = app
        .instructions
        .clone()
        .upload_data_records(authed(&token, tokio_stream::iter([ahead])))
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["records[1].collected_at"]);

    app.instructions
        .clone()
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: id.clone(),
                // One more record with the result itself: it comes first.
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    records: vec![pb::DataRecord {
                        category: "identifiers".into(),
                        value: "with the result".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    watch_to_end(&app.requests, &req.request_id).await;
    let closed = record(&app, &req.request_id).await;
    assert_eq!(closed.lines[0].data_records, 100_001);
    // A finished instruction takes no more chunks.
    let late = app
        .instructions
        .clone()
        .upload_data_records(authed(&token, tokio_stream::iter([chunk(&id, 100, 0, 1)])))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    // A stream of no chunk names what it lacks.
    let empty = app
        .instructions
        .clone()
        .upload_data_records(authed(
            &token,
            tokio_stream::iter(Vec::<pb::UploadDataRecordsRequest>::new()),
        ))
        .await
        .unwrap_err();
    assert_eq!(violations(&empty), ["records"]);

    let parts = report(&app, &req.request_id).await.unwrap();
    use pb::access_report_part::Part;
    let mut values = std::collections::HashSet::new();
    let mut piece_parts = 0;
    for part in &parts {
        if let Part::Pieces(p) = part {
            assert!(p.records.len() <= 500);
            piece_parts += 1;
            values.extend(p.records.iter().map(|r| r.value.clone()));
        }
    }
    assert_eq!(piece_parts, 201);
    assert_eq!(values.len(), 100_001, "every record once");
    let Part::Totals(totals) = parts.last().unwrap() else {
        panic!()
    };
    assert_eq!(totals.pieces, 100_001);
    assert_eq!(
        strings(&totals.categories),
        ["identifiers", "internet_activity"]
    );

    // The export the record named when the request closed, hashed from
    // the result's records and every chunk, is the file sent now.
    let files = export(&app, &req.request_id, pb::ExportFormat::Json)
        .await
        .unwrap();
    let document: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
    let records = document["processors"][0]["records"].as_array().unwrap();
    assert_eq!(records.len(), 100_001);
    assert_eq!(records[0]["value"], "with the result");
    assert_eq!(closed.export_sha256, sha256_hex(&files[0].1));
    app.stop().await;
}

/// Every file of an export: its name, its bytes, and the SHA-256 its last
/// chunk named (checked against the bytes).
async fn export(
    app: &TestApp,
    request_id: &str,
    format: pb::ExportFormat,
) -> Result<Vec<(String, Vec<u8>)>, tonic::Status> {
    let mut stream = app
        .requests
        .clone()
        .export_access_data(pb::ExportAccessDataRequest {
            request_id: request_id.into(),
            format: format as i32,
        })
        .await?
        .into_inner();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut open = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        assert!(chunk.data.len() <= 64 * 1024);
        if !open {
            files.push((chunk.file.clone(), Vec::new()));
            open = true;
        }
        let (name, bytes) = files.last_mut().unwrap();
        assert_eq!(*name, chunk.file);
        bytes.extend_from_slice(&chunk.data);
        if !chunk.sha256.is_empty() {
            assert_eq!(chunk.sha256, sha256_hex(bytes));
            open = false;
        }
    }
    assert!(!open, "every file ends with its digest");
    Ok(files)
}

/// The JSON export validates against its published schema, holds what
/// each processor answered and is the file the completion record names; two
/// exports are the same bytes. The CSV form is one file per category.
async fn the_export_validates_against_its_published_schema(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let _fakes = three_processors(&app).await;
    let req = submit(
        &app,
        access("export-fay@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    watch_to_end(&app.requests, &req.request_id).await;

    let files = export(&app, &req.request_id, pb::ExportFormat::Json)
        .await
        .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "access-export.json");
    let document: serde_json::Value = serde_json::from_slice(&files[0].1).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/access-export.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{document}");
    // The schema is no formality: a record of no category fails it.
    let mut broken = document.clone();
    broken["processors"][1]["records"][0]["category"] = "hobbies".into();
    assert!(!validator.is_valid(&broken));

    // The record, written when the request closed, names this file.
    let closed = record(&app, &req.request_id).await;
    assert_eq!(closed.export_sha256, sha256_hex(&files[0].1));
    let processors = document["processors"].as_array().unwrap();
    let ids: Vec<&str> = processors
        .iter()
        .map(|p| p["processor_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["archive", "crm", "ledger"]);
    assert_eq!(processors[0]["state"], "NO_DATA");
    assert_eq!(processors[1]["records"].as_array().unwrap().len(), 3);
    assert_eq!(
        processors[1]["records"][0]["value"],
        "report-amy@example.com"
    );
    assert_eq!(
        processors[1]["records"][0]["collected_at"],
        "2026-01-01T00:00:00.000000Z"
    );
    assert_eq!(processors[2]["state"], "DENIED");
    assert_eq!(processors[2]["exception"], "OTHER");
    let again = export(&app, &req.request_id, pb::ExportFormat::Json)
        .await
        .unwrap();
    assert_eq!(again, files, "the same bytes, so the same digest");

    let csv = export(&app, &req.request_id, pb::ExportFormat::Csv)
        .await
        .unwrap();
    let names: Vec<&str> = csv.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["identifiers.csv", "internet_activity.csv", "other.csv"]
    );
    // Each fetch is on the audit trail, which still checks out.
    let id = dsr_orchestrator::domain::RequestId::parse(&req.request_id).unwrap();
    let fetched: Vec<String> = app
        .store
        .events_after(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == dsr_orchestrator::store::EventKind::DataFetched)
        .map(|e| e.note.unwrap())
        .collect();
    assert_eq!(fetched.len(), 5, "{fetched:?}");
    assert_eq!(
        fetched[0],
        format!(
            "export access-export.json sha256 {}",
            sha256_hex(&files[0].1)
        )
    );
    assert!(fetched[2].starts_with("export identifiers.csv sha256 "));
    let verified = verify_trail(&app, &req.request_id).await;
    assert!(verified.intact, "{verified:?}");

    let identifiers = String::from_utf8(csv[0].1.clone()).unwrap();
    assert_eq!(
        identifiers,
        "processor_id,field,value,source,purpose,collected_at,disclosed_to,sold_or_shared,category_label\r\n\
         crm,email,report-amy@example.com,the consumer,providing the service,2026-01-01T00:00:00.000000Z,payment processors,false,\r\n"
    );
    // A value a spreadsheet would run as a formula is text in the CSV,
    // and as given in the JSON.
    let other = String::from_utf8(csv[2].1.clone()).unwrap();
    assert!(
        other.ends_with(
            "\r\ncrm,loyalty_tier,\"'=HYPERLINK(\"\"http://evil.example\"\")\",the consumer,\
             providing the service,2026-01-01T00:00:00.000000Z,,false,loyalty programme\r\n"
        ),
        "{other}"
    );
    assert_eq!(
        processors[1]["records"][2]["value"],
        "=HYPERLINK(\"http://evil.example\")"
    );
    app.stop().await;
}

/// A categories-only request has no pieces to export.
async fn a_categories_only_request_has_nothing_to_export(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let _fakes = three_processors(&app).await;
    let req = submit(
        &app,
        access("export-gil@example.com", pb::AccessScope::Categories),
    )
    .await;
    watch_to_end(&app.requests, &req.request_id).await;
    let refused = export(&app, &req.request_id, pb::ExportFormat::Json)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(record(&app, &req.request_id).await.export_sha256, "");
    app.stop().await;
}

/// An access instruction tells its processor (pushed or pulled) the scope
/// and how far back to look: under the CCPA 12 months unless the person
/// asked for more, back to 2022; under the GDPR everything.
async fn processors_are_told_what_the_person_asks(db: TestDb) {
    use chrono::{Months, TimeZone, Utc};
    let app = TestApp::spawn(&db).await;
    let pushed = FakeProcessor::start(Reply::Accepted).await;
    register(&app, push_processor("crm", &pushed.endpoint())).await;
    let token = register(&app, pull_processor("puller", 60_000)).await;
    let when = |t: &Timestamp| Utc.timestamp_opt(t.seconds, t.nanos as u32).unwrap();

    let req = submit(
        &app,
        access("asks-hal@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    let submitted = when(req.submitted_at.as_ref().unwrap());
    let year_before = submitted.checked_sub_months(Months::new(12)).unwrap();
    assert_eq!(req.lookback_start.as_ref().map(when), Some(year_before));
    pushed.wait_for_calls(1).await;
    let delivered = &pushed.deliveries()[0];
    assert_eq!(
        delivered.access_scope,
        pb::AccessScope::SpecificPieces as i32
    );
    assert_eq!(
        delivered.lookback_start.as_ref().map(when),
        Some(year_before)
    );
    let pulled = pull(&app, &token, 10).await;
    assert_eq!(
        pulled[0].access_scope,
        pb::AccessScope::SpecificPieces as i32
    );
    assert_eq!(
        pulled[0].lookback_start.as_ref().map(when),
        Some(year_before)
    );

    // Further back, to 2022, on request; not before.
    let start_2022 = Timestamp {
        seconds: 1_640_995_200,
        nanos: 0,
    };
    let mut further = access("asks-ida@example.com", pb::AccessScope::Categories);
    further.lookback_start = Some(start_2022);
    let req = submit(&app, further.clone()).await;
    assert_eq!(req.lookback_start, Some(start_2022));
    further.request_id = new_id();
    further.lookback_start = Some(Timestamp {
        seconds: start_2022.seconds - 1,
        nanos: 0,
    });
    let refused = submit_rejected(&app, further).await;
    assert_eq!(violations(&refused), ["lookback_start"]);

    // The GDPR covers everything held.
    let mut gdpr = access("asks-jo@example.com", pb::AccessScope::Categories);
    gdpr.jurisdiction = pb::Jurisdiction::Gdpr as i32;
    gdpr.verification.as_mut().unwrap().level = pb::VerificationLevel::ReasonablyHigh as i32;
    let req = submit(&app, gdpr).await;
    assert_eq!(req.lookback_start, None);
    app.stop().await;
}

/// What processors answered before a request was cancelled is not given
/// out: the person withdrew it. `crm` has answered with its records,
/// `slow` has not when the request is cancelled. Its report and its export
/// are refused and `ListInstructions` shows no records, before the data is
/// erased; then a replica with a short erase interval erases it, without
/// waiting out the report window.
async fn a_cancelled_request_has_no_report(db: TestDb) {
    // The default erase interval: nothing is erased while this one looks.
    let app = TestApp::spawn(&db).await;
    let crm = FakeProcessor::start(Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Completed as i32,
        records: crm_records(),
        ..Default::default()
    }))
    .await;
    let slow = FakeProcessor::start(Reply::Hang).await;
    register(&app, push_processor("crm", &crm.endpoint())).await;
    register(&app, push_processor("slow", &slow.endpoint())).await;
    let req = submit(
        &app,
        access("report-eve@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    let answered = instruction_of(&req, "crm");
    wait_for_state(&app, &answered, pb::InstructionState::Completed).await;
    let records_of = |all: Vec<pb::Instruction>| {
        let line = all.into_iter().find(|i| i.instruction_id == answered);
        line.and_then(|i| i.result).map_or(0, |r| r.records.len())
    };
    assert_eq!(records_of(all_instructions(&app).await), 3);
    slow.wait_for_calls(1).await;
    cancel(&app, &req.request_id, "consumer withdrew the request").await;
    slow.release();

    let refused = report(&app, &req.request_id).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("cancelled"), "{refused:?}");
    let refused = export(&app, &req.request_id, pb::ExportFormat::Json)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(records_of(all_instructions(&app).await), 0);
    assert_eq!(record(&app, &req.request_id).await.export_sha256, "");
    assert!(
        get_request(&app, &req.request_id)
            .await
            .identities_erased_at
            .is_none()
    );
    app.stop().await;

    let eraser = TestApp::spawn_with(&db, Default::default(), |c| {
        c.erase_interval = std::time::Duration::from_millis(20);
    })
    .await;
    crate::protection::wait_erased(&eraser, &req.request_id).await;
    eraser.stop().await;
}

/// `ListInstructions` reads the records of a page's instructions together,
/// and opens each instruction's on its own: `billing`'s sealed records are
/// replaced by `crm`'s, which are bound to `crm`'s row and do not open in
/// `billing`'s. The page still comes back, `crm` with its records and
/// `billing` with its result but none, marked as holding records that do
/// not open.
async fn a_page_of_instructions_shows_the_records_that_open(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let answer = Reply::Done(pb::InstructionResult {
        outcome: pb::Outcome::Completed as i32,
        records: crm_records(),
        ..Default::default()
    });
    let crm = FakeProcessor::start(answer.clone()).await;
    let billing = FakeProcessor::start(answer).await;
    register(&app, push_processor("crm", &crm.endpoint())).await;
    register(&app, push_processor("billing", &billing.endpoint())).await;
    let req = submit(
        &app,
        access("page-ann@example.com", pb::AccessScope::SpecificPieces),
    )
    .await;
    let (crm_id, billing_id) = (instruction_of(&req, "crm"), instruction_of(&req, "billing"));
    for id in [&crm_id, &billing_id] {
        wait_for_state(&app, id, pb::InstructionState::Completed).await;
    }
    let records_of = |all: &[pb::Instruction], id: &str| {
        let line = all.iter().find(|i| i.instruction_id == id).expect("listed");
        line.result.as_ref().expect("a result").records.len()
    };
    let listed = all_instructions(&app).await;
    assert_eq!(
        (
            records_of(&listed, &crm_id),
            records_of(&listed, &billing_id)
        ),
        (3, 3)
    );

    db.execute(&format!(
        "update instructions set sealed_records = \
         (select sealed_records from instructions where id = '{crm_id}') \
         where id = '{billing_id}'"
    ))
    .await;
    let listed = all_instructions(&app).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (
            records_of(&listed, &crm_id),
            records_of(&listed, &billing_id)
        ),
        (3, 0)
    );
    let unreadable = |id: &str| {
        let line = listed.iter().find(|i| i.instruction_id == id).unwrap();
        line.records_unreadable
    };
    assert_eq!(
        (unreadable(&crm_id), unreadable(&billing_id)),
        (false, true)
    );
    app.stop().await;
}
