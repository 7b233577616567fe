//! InstructionService: the processors' callbacks (acknowledge, complete,
//! pull) and the operators' list, retry and resolve.

use dsr_orchestrator::pb;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(
    processor_callbacks_table,
    pull_instructions_table,
    list_instructions_table,
    operator_controls_table,
);

/// AcknowledgeInstruction and CompleteInstruction with a valid token: the
/// instruction id and the reported result.
async fn processor_callbacks_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    let (_, id) = open_request(&app).await;
    let mut client = app.instructions.clone();

    let bad_ids: Table<String> = vec![
        ("missing instruction_id", String::new(), &["instruction_id"]),
        ("not a UUID", "instruction-1".into(), &["instruction_id"]),
        ("upper-case UUID", id.to_uppercase(), &["instruction_id"]),
        (
            "nil UUID",
            uuid::Uuid::nil().to_string(),
            &["instruction_id"],
        ),
    ];
    expect_rejections(
        "AcknowledgeInstruction",
        bad_ids.clone(),
        async |instruction_id| {
            client
                .acknowledge_instruction(authed(
                    &token,
                    pb::AcknowledgeInstructionRequest { instruction_id },
                ))
                .await
        },
        async || all_instructions(&app).await,
    )
    .await;
    expect_rejections(
        "CompleteInstruction",
        bad_ids,
        async |instruction_id| {
            client
                .complete_instruction(authed(
                    &token,
                    pb::CompleteInstructionRequest {
                        instruction_id,
                        result: result(pb::Outcome::Completed),
                    },
                ))
                .await
        },
        async || all_instructions(&app).await,
    )
    .await;

    let result = |edit: fn(&mut pb::InstructionResult)| {
        let mut r = pb::InstructionResult {
            outcome: pb::Outcome::Completed as i32,
            ..Default::default()
        };
        edit(&mut r);
        Some(r)
    };
    let denied = |r: &mut pb::InstructionResult| r.outcome = pb::Outcome::Denied as i32;
    let results: Table<Option<pb::InstructionResult>> = vec![
        ("missing result", None, &["result"]),
        (
            "missing outcome",
            result(|r| r.outcome = 0),
            &["result.outcome"],
        ),
        (
            "unknown outcome",
            result(|r| r.outcome = 99),
            &["result.outcome"],
        ),
        (
            "DENIED without exception or explanation",
            result(denied),
            &["result.exception", "result.explanation"],
        ),
        (
            "DENIED with a blank explanation",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = pb::DeletionException::Other as i32;
                r.explanation = "  ".into();
            }),
            &["result.explanation"],
        ),
        (
            "unknown exception",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = 99;
                r.explanation = "kept".into();
            }),
            &["result.exception"],
        ),
        (
            "exception without DENIED",
            result(|r| r.exception = pb::DeletionException::CcpaDebugging as i32),
            &["result.exception"],
        ),
        (
            "FAILED without reason",
            result(|r| r.outcome = pb::Outcome::Failed as i32),
            &["result.reason"],
        ),
        (
            "2001-character explanation",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = pb::DeletionException::Other as i32;
                r.explanation = "e".repeat(2001);
            }),
            &["result.explanation"],
        ),
        (
            "2001-character reason",
            result(|r| {
                r.outcome = pb::Outcome::Failed as i32;
                r.reason = "e".repeat(2001);
            }),
            &["result.reason"],
        ),
        (
            "NUL in the reason",
            result(|r| {
                r.outcome = pb::Outcome::Failed as i32;
                r.reason = "no\u{0}account".into();
            }),
            &["result.reason"],
        ),
        (
            "terminal escape in the explanation",
            result(|r| {
                r.outcome = pb::Outcome::Denied as i32;
                r.exception = pb::DeletionException::Other as i32;
                r.explanation = "kept \u{1b}[31mred".into();
            }),
            &["result.explanation"],
        ),
        (
            "control character in a sub-processor's name",
            result(|r| {
                r.sub_processors = vec![pb::SubProcessor {
                    name: "Backup\u{7}Co".into(),
                    country: "IL".into(),
                }]
            }),
            &["result.sub_processors[0].name"],
        ),
        (
            "sub-processor without name, lower-case country",
            result(|r| {
                r.sub_processors = vec![
                    pb::SubProcessor {
                        name: "Backup Co".into(),
                        country: "IL".into(),
                    },
                    pb::SubProcessor {
                        name: String::new(),
                        country: "il".into(),
                    },
                ]
            }),
            &[
                "result.sub_processors[1].name",
                "result.sub_processors[1].country",
            ],
        ),
        (
            "a sub-processor's country that is no assigned code",
            result(|r| {
                r.sub_processors = vec![pb::SubProcessor {
                    name: "Backup Co".into(),
                    country: "UK".into(),
                }]
            }),
            &["result.sub_processors[0].country"],
        ),
        (
            "101 sub-processors",
            result(|r| {
                r.sub_processors = (0..101)
                    .map(|i| pb::SubProcessor {
                        name: format!("Sub {i}"),
                        country: String::new(),
                    })
                    .collect()
            }),
            &["result.sub_processors"],
        ),
        (
            "data records for a deletion",
            result(|r| {
                r.records = vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "x".into(),
                    source: String::new(),
                    ..Default::default()
                }]
            }),
            &["result.records"],
        ),
        (
            "data records with NO_DATA",
            result(|r| {
                r.outcome = pb::Outcome::NoData as i32;
                r.records = vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "x".into(),
                    source: String::new(),
                    ..Default::default()
                }]
            }),
            &["result.records"],
        ),
    ];
    expect_rejections(
        "CompleteInstruction",
        results,
        async |result| {
            client
                .complete_instruction(authed(
                    &token,
                    pb::CompleteInstructionRequest {
                        instruction_id: id.clone(),
                        result,
                    },
                ))
                .await
        },
        async || all_instructions(&app).await,
    )
    .await;
    app.stop().await;
}

/// PullInstructions: `max_instructions` from 1 to 100 (0: default).
async fn pull_instructions_table(db: TestDb) {
    let (app, token) = app_with_pull_processor(&db).await;
    open_request(&app).await;
    let cases: Table<i32> = vec![
        ("101", 101, &["max_instructions"]),
        ("-1", -1, &["max_instructions"]),
        ("i32::MIN", i32::MIN, &["max_instructions"]),
        ("i32::MAX", i32::MAX, &["max_instructions"]),
    ];
    let mut client = app.instructions.clone();
    expect_rejections(
        "PullInstructions",
        cases,
        async |max_instructions| {
            client
                .pull_instructions(authed(
                    &token,
                    pb::PullInstructionsRequest { max_instructions },
                ))
                .await
        },
        async || all_instructions(&app).await,
    )
    .await;
    // The boundary is accepted and leases the pending instruction.
    let pulled = client
        .pull_instructions(authed(
            &token,
            pb::PullInstructionsRequest {
                max_instructions: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.instructions.len(), 1);
    app.stop().await;
}

/// ListInstructions: page size, page token and filters.
async fn list_instructions_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    open_request(&app).await;
    let list = |edit: fn(&mut pb::ListInstructionsRequest)| {
        let mut r = pb::ListInstructionsRequest::default();
        edit(&mut r);
        r
    };
    let cases: Table<pb::ListInstructionsRequest> = vec![
        (
            "negative page_size",
            list(|r| r.page_size = -1),
            &["page_size"],
        ),
        (
            "garbage page_token",
            list(|r| r.page_token = "garbage!".into()),
            &["page_token"],
        ),
        (
            "page_token that is not an instruction id",
            // base64url of "intake": a ListProcessors token.
            list(|r| r.page_token = "aW50YWtl".into()),
            &["page_token"],
        ),
        ("unknown state", list(|r| r.state = 99), &["state"]),
        (
            "malformed processor_id",
            list(|r| r.processor_id = "Intake".into()),
            &["processor_id"],
        ),
        (
            "malformed request_id",
            list(|r| r.request_id = "request-1".into()),
            &["request_id"],
        ),
        (
            "everything wrong",
            list(|r| {
                r.page_size = -1;
                r.page_token = "garbage!".into();
                r.state = -1;
                r.processor_id = "x".into();
                r.request_id = "y".into();
            }),
            &[
                "page_size",
                "state",
                "processor_id",
                "request_id",
                "page_token",
            ],
        ),
    ];
    let mut client = app.instructions.clone();
    expect_rejections(
        "ListInstructions",
        cases,
        async |msg| client.list_instructions(msg).await,
        async || (),
    )
    .await;
    assert_eq!(all_instructions(&app).await.len(), 1);

    // A real token, with another filter than it was issued for.
    open_request(&app).await;
    let first = client
        .list_instructions(list(|r| r.page_size = 1))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let mut other = list(|r| r.state = pb::InstructionState::Pending as i32);
    other.page_token = first.next_page_token;
    let refused = client.list_instructions(other).await.unwrap_err();
    assert_eq!(violations(&refused), ["page_token"]);
    app.stop().await;
}

/// RetryInstruction and ResolveInstruction: ids, results and notes.
async fn operator_controls_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let (request_id, id) = open_request(&app).await;
    let mut client = app.instructions.clone();

    let bad_ids: Table<String> = vec![
        ("missing instruction_id", String::new(), &["instruction_id"]),
        ("not a UUID", "instruction-1".into(), &["instruction_id"]),
        ("upper-case UUID", id.to_uppercase(), &["instruction_id"]),
    ];
    expect_rejections(
        "RetryInstruction",
        bad_ids,
        async |instruction_id| {
            client
                .retry_instruction(pb::RetryInstructionRequest { instruction_id })
                .await
        },
        async || all_instructions(&app).await,
    )
    .await;

    let no_data = || result(pb::Outcome::NoData);
    let resolve = |instruction_id: &str, result, note: &str| pb::ResolveInstructionRequest {
        instruction_id: instruction_id.into(),
        result,
        note: note.into(),
    };
    let note = "confirmed by phone with the vendor's DPO";
    let cases: Table<pb::ResolveInstructionRequest> = vec![
        (
            "missing instruction_id",
            resolve("", no_data(), note),
            &["instruction_id"],
        ),
        (
            "upper-case instruction_id",
            resolve(&id.to_uppercase(), no_data(), note),
            &["instruction_id"],
        ),
        ("missing result", resolve(&id, None, note), &["result"]),
        ("missing note", resolve(&id, no_data(), ""), &["note"]),
        ("blank note", resolve(&id, no_data(), " \n "), &["note"]),
        (
            "2001-character note",
            resolve(&id, no_data(), &"n".repeat(2001)),
            &["note"],
        ),
        (
            "DENIED without exception",
            resolve(
                &id,
                Some(pb::InstructionResult {
                    outcome: pb::Outcome::Denied as i32,
                    explanation: "invoices kept for tax law".into(),
                    ..Default::default()
                }),
                note,
            ),
            &["result.exception"],
        ),
        (
            "unknown outcome",
            resolve(
                &id,
                Some(pb::InstructionResult {
                    outcome: 99,
                    ..Default::default()
                }),
                note,
            ),
            &["result.outcome"],
        ),
        (
            "everything wrong",
            resolve("nope", None, ""),
            &["instruction_id", "result", "note"],
        ),
    ];
    expect_rejections(
        "ResolveInstruction",
        cases,
        async |msg| client.resolve_instruction(msg).await,
        async || all_instructions(&app).await,
    )
    .await;
    // Nothing was resolved: the request is still open, without a record.
    let r = get_request(&app, &request_id).await;
    assert_eq!(r.status(), pb::RequestStatus::Received);
    app.stop().await;
}
