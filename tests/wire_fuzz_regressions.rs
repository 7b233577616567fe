//! What the fuzz targets in `fuzz/` found, kept as ordinary tests so that
//! `cargo test` guards it without nightly or libFuzzer: inputs the fuzzer
//! kept for reaching new code, each converted as its service converts it,
//! with the answer it gives today; the field paths the newer targets'
//! rejections name; and properties that arbitrary bytes, decoded as any
//! request message, and arbitrary JSON, as any callback body, never make a
//! conversion panic; and that processors' answers to deliveries, whatever
//! they hold, give an answer or fail the delivery for good, saying why.
//!
//! The conversions are those of `fuzz/src/rpc.rs` and
//! `fuzz/src/replies.rs`, included here rather than copied, so the targets
//! and these tests run the same calls. Inputs
//! are the protobuf encoding of one request message, as hex, without the
//! selector byte the per-service targets put in front of it.

#[path = "../fuzz/src/replies.rs"]
mod replies;
#[path = "../fuzz/src/rpc.rs"]
mod rpc;

use dsr_orchestrator::dispatch::adapter::{Answer, DeliveryError};
use dsr_orchestrator::domain::Outcome as Decided;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use replies::{Converted, Reply};
use rpc::{Body, Outcome, Rpc};
use serde_json::Value;

/// An input the fuzzer kept: the RPC, its request message as hex, and the
/// fields the answer names (none when the conversion succeeds).
struct Kept {
    rpc: Rpc,
    message: &'static str,
    fields: &'static [&'static str],
}

/// Inputs from the fuzzers' corpora that reach corners the unit tests in
/// `src/wire/` do not visit.
const KEPT: &[Kept] = &[
    // An empty submission: every required field is named in one answer.
    Kept {
        rpc: Rpc::SubmitRequest,
        message: "",
        fields: &[
            "request_id",
            "kind",
            "jurisdiction",
            "subject_identities",
            "channel",
            "requester",
            "verification",
        ],
    },
    // Valid, though far from the example: one identity, no submitted_at,
    // an empty verification method, no processors, no labels.
    Kept {
        rpc: Rpc::SubmitRequest,
        message: "0a2436663163326231652d336134642d346335652d396636302d373138323933613462356336100218012218080112146a616e652e646f65406578616d706c652e636f3a32087765625f666f726d3801420e0802520a65612d6335652d392d31",
        fields: &[],
    },
    // Filter timestamps whose nanos exceed a second.
    Kept {
        rpc: Rpc::ListRequests,
        message: "32061080e2cfaa063a0610fbd3ebdc03",
        fields: &["submitted_after", "submitted_before"],
    },
    // A page token that is nearly a cursor (damaged base64 with NULs),
    // an unknown status number, nanos out of range.
    Kept {
        rpc: Rpc::ListRequests,
        message: "0814126765794a7a64574a746158525a30525866595724694f6a45334e446b354f546b774d4441784d6a4d304e545973496d6c6b496a6f694e655978597a4a694d5755744d3245305a433030597a566c4c546c6d4e6a41744e7a45384d6a6b7a595452694e000000006e30180620022802320610ff98ebdc03",
        fields: &["status", "submitted_after", "page_token"],
    },
    // A multiplier of 122880, 126 attempts, 120 reminders; no role,
    // kinds, identity types or adapter.
    Kept {
        rpc: Rpc::RegisterProcessor,
        message: "0a430a0f706c6174666f726d2d76656e646f721214506c6174666f726d2054656e646f7220476d62482202444542140a020802120308d80419000000000000fe40207e5878",
        fields: &[
            "processor.role",
            "processor.adapter",
            "processor.retry_policy.multiplier",
            "processor.retry_policy.max_attempts",
            "processor.supported_kinds",
            "processor.accepted_identity_types",
            "processor.max_reminders",
        ],
    },
    // An id with control characters and NULs; an endpoint with no scheme.
    Kept {
        rpc: Rpc::RegisterProcessor,
        message: "0a5c0a0f70160000000000000076656e646f721214506c6174666f726d2056656e646f7220496e632e1802220255532a0202013201013a260a240a1e3a2f2f64732e72766e406f64766e656f64722e6578616d706c65343a34331202080a",
        fields: &["processor.processor_id", "processor.adapter.grpc.endpoint"],
    },
    // Valid: country, max_reminders and retry_policy replaced, the new
    // policy leaving max_backoff to its default.
    Kept {
        rpc: Rpc::UpdateProcessor,
        message: "0a430a0f706c6174666f726d2d76652d646f721214506c6174666f726d2056656e646f7220476d62482202444542140a0208023d0308d8031900000000000008402004520012344a0c646973706c61795f6e616d650a07636f756e7472790a0d6d61785f72656d696e646572730a0c72657472795f706f6c696379",
        fields: &[],
    },
    // A patch without a mask.
    Kept {
        rpc: Rpc::UpdateProcessor,
        message: "0a430a0f706c6166746f726d2d76656e646f721214506c6174666f4d6d205630726d2d76656e646f721214506c6174666f726d2056656e646f7220496e632e180222025553",
        fields: &["update_mask"],
    },
    // Valid: an explanation that echoes a sent email next to `İ`, whose
    // lower case is longer than itself (redaction folds ASCII only).
    Kept {
        rpc: Rpc::CompleteInstruction,
        message: "0a2430313838396135642d616339362d373734622d626363652d62333039353030383932613712250803100e1a1f6a616e652e646f65406578616d706c652e636f6d72616d706c652ec4b06e65",
        fields: &[],
    },
    // DENIED without its ground (exception, explanation) and with data
    // records, which only COMPLETED may carry; the first record's category
    // is none of the CCPA's, the second's value holds NULs.
    Kept {
        rpc: Rpc::CompleteInstruction,
        message: "0a2430313434356135642d616339362d373734622d626363652d623330323039396138303537127108033a2c6578706f7274656420746865206163636f756e74206f66206a616e652e646f65c19a879e6d706cf62e636f6d32120a0c4172636869766520476d624812024445322b0a0b6964656e7469666965727312146a616e652e646f65406578616d0a00000000000080706c652e636f70",
        fields: &[
            "result.exception",
            "result.explanation",
            "result.records",
            "result.records[0].category",
            "result.records[1].value",
        ],
    },
    // An unknown state, ids with control characters and NULs, a token
    // that is not base64.
    Kept {
        rpc: Rpc::ListInstructions,
        message: "0864123001000000000000004e57517459574d354e6930334e7a52694c574a6a59325558596a4d774d6a41354f5745344d4455331861220f076c7074666f726d2d76656e646f722a2436663163326231652d336134642d346332652d3966363000000008323933613462356336",
        fields: &["state", "processor_id", "request_id", "page_token"],
    },
    // A negative batch size.
    Kept {
        rpc: Rpc::PullInstructions,
        message: "08bfffffff4e",
        fields: &["max_instructions"],
    },
    // An empty chunk of data records: no instruction, no records.
    Kept {
        rpc: Rpc::UploadDataRecords,
        message: "",
        fields: &["instruction_id", "records"],
    },
    // An export in a format that does not exist.
    Kept {
        rpc: Rpc::ExportAccessData,
        message: "1009",
        fields: &["format"],
    },
];

/// The field paths an outcome names, in the order reported.
fn fields(outcome: &Outcome) -> Vec<&str> {
    match outcome {
        Ok(()) => vec![],
        Err(v) => v.iter().map(|v| v.field.as_str()).collect(),
    }
}

#[test]
fn every_rpc_has_an_example_that_converts() {
    for rpc in rpc::all() {
        assert_eq!(rpc.convert(&rpc.example()), Some(Ok(())), "{rpc:?}");
    }
}

#[test]
fn every_callback_body_has_an_example_that_converts() {
    for body in rpc::BODIES {
        assert_eq!(body.convert(&body.example()), Some(Ok(())), "{body:?}");
    }
}

/// The outcome an answer gives: `Some(None)` for accepted, `Some(Some(_))`
/// for a result at once, `None` for a failure.
fn decided(converted: &Converted) -> Option<Option<Decided>> {
    match converted {
        Ok(Answer::Accepted) => Some(None),
        Ok(Answer::Done(result)) => Some(Some(result.outcome)),
        Err(_) => None,
    }
}

#[test]
fn every_processor_answer_has_an_example_that_converts() {
    let expected = [
        (Reply::Grpc, Decided::Denied),
        (Reply::Webhook, Decided::Completed),
        (Reply::OpenDsr, Decided::Completed),
        (Reply::Federation, Decided::Completed),
    ];
    assert_eq!(expected.map(|(r, _)| r), replies::REPLIES);
    for (reply, outcome) in expected {
        let converted = reply.convert(&reply.example()).expect("decodes");
        assert_eq!(decided(&converted), Some(Some(outcome)), "{reply:?}");
    }
}

/// What processors send that cannot be used fails the delivery for good,
/// with `INVALID_RESULT` and a message naming what is wrong; what can be
/// used gives its answer.
#[test]
fn processor_answers_are_used_or_refused_for_good() {
    use dsr_orchestrator::pb;
    use prost::Message;

    let downstream = |state: pb::InstructionState, exception: i32| {
        pb::CompletionRecord {
            lines: vec![pb::ProcessorLine {
                processor_id: "archive".into(),
                display_name: "Archive GmbH".into(),
                state: state as i32,
                exception,
                explanation: "kept".into(),
                ..pb::ProcessorLine::default()
            }],
            ..pb::CompletionRecord::default()
        }
        .encode_to_vec()
    };
    let legal = pb::DeletionException::GdprLegalObligation as i32;
    let used: [(Reply, &[u8], Option<Decided>); 6] = [
        (Reply::Webhook, b" \r\n", None),
        (
            Reply::Webhook,
            br#"{"disposition": "DISPOSITION_ACCEPTED"}"#,
            None,
        ),
        (
            Reply::OpenDsr,
            br#"{"subject_request_id": "x", "request_status": "in_progress"}"#,
            None,
        ),
        (
            Reply::OpenDsr,
            br#"{"subject_request_id": "x", "request_status": "cancelled"}"#,
            Some(Decided::Failed),
        ),
        (
            Reply::Federation,
            &downstream(pb::InstructionState::Denied, legal),
            Some(Decided::Denied),
        ),
        (
            Reply::Federation,
            &downstream(pb::InstructionState::Failed, 0),
            Some(Decided::Failed),
        ),
    ];
    for (i, (reply, bytes, outcome)) in used.into_iter().enumerate() {
        let converted = reply.convert(bytes).expect("decodes");
        assert_eq!(
            decided(&converted),
            Some(outcome),
            "case {i}: {converted:?}"
        );
    }
    let refused: [(Reply, &[u8], &str); 8] = [
        (Reply::Grpc, b"", "disposition is unspecified"),
        (
            Reply::Grpc,
            &pb::DeliverInstructionResponse {
                disposition: pb::deliver_instruction_response::Disposition::Done as i32,
                result: None,
            }
            .encode_to_vec(),
            "result: is required",
        ),
        (Reply::Webhook, b"OK", "is not valid JSON"),
        (
            Reply::Webhook,
            br#"{"disposition": "DISPOSITION_DONE"}"#,
            "result: is required",
        ),
        (
            Reply::Webhook,
            br#"{"disposition": "DISPOSITION_ACCEPTED", "note": 1}"#,
            "does not match the documented schema",
        ),
        (
            Reply::OpenDsr,
            br#"{"subject_request_id": "x", "request_status": "lost"}"#,
            "request_status",
        ),
        (
            Reply::OpenDsr,
            br#"{"request_status": 7}"#,
            "not an OpenDSR status",
        ),
        // A downstream denial without its ground.
        (
            Reply::Federation,
            &downstream(pb::InstructionState::Denied, 0),
            "makes no valid result: exception",
        ),
    ];
    for (i, (reply, bytes, says)) in refused.into_iter().enumerate() {
        let converted = reply.convert(bytes).expect("decodes");
        replies::check(reply, &converted);
        let Err(DeliveryError::Fatal { message, .. }) = &converted else {
            panic!("case {i}: used: {converted:?}");
        };
        assert!(message.contains(says), "case {i}: {message}");
    }
    // What the processor sent is not repeated in the failure, which is
    // logged and kept as the instruction's last error.
    let echoed = Reply::OpenDsr.convert(br#"{"subject_request_id": 987654321}"#);
    let Some(Err(DeliveryError::Fatal { message, .. })) = echoed else {
        panic!("used: {echoed:?}");
    };
    assert!(!message.contains("987654321"), "{message}");
}

/// Rejections of the suppression list's and the callback API's inputs
/// name the fields at fault, as the gRPC API's do: the JSON's own checks
/// (an enum name, a time) and the gRPC method's behind them.
#[test]
fn rejections_name_their_fields() {
    use dsr_orchestrator::pb;
    use prost::Message;

    let cases: [(Option<Outcome>, &[&str]); 9] = [
        (Rpc::CheckSuppression.convert(b""), &["identities"]),
        (
            Rpc::RemoveSuppression.convert(
                &pb::RemoveSuppressionRequest {
                    identities: vec![pb::SubjectIdentity::default()],
                    reason: " ".into(),
                }
                .encode_to_vec(),
            ),
            &["identities[0].type", "identities[0].value", "reason"],
        ),
        (
            Rpc::ResealData.convert(&pb::ResealDataRequest { batch_size: 10_001 }.encode_to_vec()),
            &["batch_size"],
        ),
        (Body::Complete.convert(b""), &["result"]),
        (
            Body::Complete.convert(br#"{"result": {"outcome": "OUTCOME_SHRUGGED"}}"#),
            &["result.outcome"],
        ),
        (
            Body::Complete.convert(br#"{"result": {"outcome": "OUTCOME_DENIED"}}"#),
            &["result.exception", "result.explanation"],
        ),
        (
            Body::Pull.convert(br#"{"max_instructions": 101}"#),
            &["max_instructions"],
        ),
        (
            Body::Upload.convert(
                br#"{"records": [{"category": "identifiers", "value": "x",
                    "collected_at": "yesterday"}]}"#,
            ),
            &["records[0].collected_at"],
        ),
        (Body::Upload.convert(b"{}"), &["records"]),
    ];
    for (i, (outcome, expected)) in cases.into_iter().enumerate() {
        let outcome = outcome.unwrap_or_else(|| panic!("case {i} does not parse"));
        rpc::check(i, &outcome);
        assert_eq!(fields(&outcome), expected, "case {i}");
    }
    assert_eq!(
        Body::Pull.convert(b"max_instructions = 3"),
        None,
        "not JSON"
    );
}

#[test]
fn the_selector_byte_reaches_every_rpc_of_its_service() {
    for service in [
        &rpc::REQUEST_SERVICE[..],
        &rpc::PROCESSOR_SERVICE,
        &rpc::INSTRUCTION_SERVICE,
        &rpc::DATA_PROTECTION_SERVICE,
    ] {
        for &rpc in service {
            let input = [rpc::selector(rpc), 0x0a, 0x00];
            assert_eq!(
                rpc::select(service, &input),
                Some((rpc, &input[1..])),
                "{rpc:?}"
            );
            // Selectors wrap around, so every byte picks some RPC.
            let wrapped = [rpc::selector(rpc) + service.len() as u8];
            assert_eq!(rpc::select(service, &wrapped), Some((rpc, &[][..])));
        }
        assert_eq!(rpc::select(service, &[]), None);
    }
}

#[test]
fn page_tokens_are_accepted_by_the_list_method_that_issued_them_only() {
    for (i, token) in rpc::example_page_tokens().iter().enumerate() {
        let outcomes = rpc::page_token(token);
        for (j, outcome) in outcomes.iter().enumerate() {
            assert_eq!(outcome.is_ok(), i == j, "token {i} in list method {j}");
        }
    }
    for garbage in ["", "!", "e30", "bm90IGpzb24", "////"] {
        assert!(
            rpc::page_token(garbage).iter().all(Result::is_err),
            "{garbage:?}"
        );
    }
}

#[test]
fn kept_inputs_convert_as_recorded() {
    for kept in KEPT {
        let bytes = hex::decode(kept.message).expect("kept inputs are hex");
        let outcome = kept
            .rpc
            .convert(&bytes)
            .unwrap_or_else(|| panic!("{:?} {}: does not decode", kept.rpc, kept.message));
        rpc::check(kept.rpc, &outcome);
        assert_eq!(
            fields(&outcome),
            kept.fields,
            "{:?} {}",
            kept.rpc,
            kept.message
        );
    }
}

/// A label key in a field path is cut to 63 characters (`shown_key` in
/// `src/domain/request.rs`), so an answer carries no more of a bad key than
/// the caller needs to find it, whichever check names it (found by
/// fuzzing: the value's check once named the key uncut).
#[test]
fn violations_name_a_label_key_by_at_most_63_characters() {
    use dsr_orchestrator::pb;
    use prost::Message;

    let key = "K".repeat(1000);
    let message = pb::SubmitRequestRequest {
        labels: [(key, "v".repeat(300))].into(),
        ..Default::default()
    };
    let outcome = Rpc::SubmitRequest
        .convert(&message.encode_to_vec())
        .expect("decodes");
    let labels: Vec<&str> = fields(&outcome)
        .into_iter()
        .filter(|f| f.starts_with("labels["))
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    for field in labels {
        let shown = field.trim_start_matches("labels[").trim_end_matches(']');
        assert!(
            shown.chars().count() <= 64,
            "{} characters of the key in {:?}",
            shown.chars().count(),
            &field[..80]
        );
    }
}

/// Every RPC, for the strategies below.
fn any_rpc() -> impl Strategy<Value = Rpc> {
    select(rpc::all().collect::<Vec<_>>())
}

/// The callback API's and processors' answers' field names, and one
/// neither has.
const KEYS: &[&str] = &[
    "result",
    "outcome",
    "exception",
    "explanation",
    "reason",
    "sub_processors",
    "name",
    "country",
    "records",
    "category",
    "category_label",
    "field",
    "value",
    "source",
    "purpose",
    "collected_at",
    "disclosed_to",
    "sold_or_shared",
    "max_instructions",
    "chunk_index",
    "disposition",
    "subject_request_id",
    "request_status",
    "expected_completion_time",
    "api_version",
    "extra",
];

/// Any string, often one of the names and values the callback API and
/// processors' answers use.
fn any_string() -> impl Strategy<Value = Value> {
    let known = select(vec![
        "OUTCOME_COMPLETED",
        "OUTCOME_DENIED",
        "OUTCOME_FAILED",
        "DELETION_EXCEPTION_CCPA_LEGAL_OBLIGATION",
        "DISPOSITION_DONE",
        "DISPOSITION_ACCEPTED",
        "completed",
        "in_progress",
        "identifiers",
        "other",
        "2026-01-02T03:04:05Z",
        "DE",
    ]);
    prop_oneof![
        any::<String>().prop_map(Value::from),
        known.prop_map(Value::from)
    ]
}

/// Any JSON, its strings often names the callback API knows and its
/// objects keyed by the API's field names.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any_string(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((select(KEYS.to_vec()), inner), 0..6).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// The JSON pointer of every node of `v`, `at` for `v` itself.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                pointers(item, format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `example` with the bytes of `overwrites` written over it (at indexes
/// taken modulo its length) and `tail` appended: these decode far more
/// often than random bytes.
fn damaged(
    mut example: Vec<u8>,
    overwrites: Vec<(prop::sample::Index, u8)>,
    tail: Vec<u8>,
) -> Vec<u8> {
    for (at, byte) in overwrites {
        let at = at.index(example.len());
        example[at] = byte;
    }
    example.extend(tail);
    example
}

/// The JSON `example` with the node at each index of `edits` (in the
/// order of [`pointers`]) replaced by its value.
fn edited(example: &[u8], edits: Vec<(prop::sample::Index, Value)>) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(example).unwrap();
    for (at, new) in edits {
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        let at = &all[at.index(all.len())];
        *value.pointer_mut(at).expect("a node of the value") = new;
    }
    serde_json::to_vec(&value).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random bytes, tried as the request message of every RPC. Most do
    /// not decode (and are skipped, as the server rejects them before any
    /// conversion); those that do carry random field values.
    #[test]
    fn arbitrary_bytes_never_make_a_conversion_panic(bytes in vec(any::<u8>(), 0..256)) {
        for rpc in rpc::all() {
            if let Some(outcome) = rpc.convert(&bytes) {
                rpc::check(rpc, &outcome);
            }
        }
    }

    /// A valid message with some bytes overwritten and some appended:
    /// these decode far more often than random bytes, and reach the
    /// checks behind the first ones.
    #[test]
    fn damaged_examples_never_make_a_conversion_panic(
        rpc in any_rpc(),
        overwrites in vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        tail in vec(any::<u8>(), 0..24),
    ) {
        let bytes = damaged(rpc.example(), overwrites, tail);
        if let Some(outcome) = rpc.convert(&bytes) {
            rpc::check(rpc, &outcome);
        }
    }

    /// Any JSON as the body of every callback route.
    #[test]
    fn arbitrary_json_bodies_never_make_a_conversion_panic(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for body in rpc::BODIES {
            if let Some(outcome) = body.convert(&bytes) {
                rpc::check(body, &outcome);
            }
        }
    }

    /// A route's example body with some of its values (or the whole of it)
    /// replaced, mostly by strings (most of its values are strings), else
    /// by any JSON: these parse far more often than arbitrary JSON, and
    /// reach the checks behind the first ones.
    #[test]
    fn damaged_callback_bodies_never_make_a_conversion_panic(
        body in select(rpc::BODIES.to_vec()),
        edits in vec((any::<prop::sample::Index>(), prop_oneof![3 => any_string(), 1 => any_json()]), 1..4),
    ) {
        let bytes = edited(&body.example(), edits);
        if let Some(outcome) = body.convert(&bytes) {
            rpc::check(body, &outcome);
        }
    }

    /// Random bytes as every kind of processor answer, and a valid answer
    /// with some bytes overwritten and some appended.
    #[test]
    fn arbitrary_and_damaged_answers_are_used_or_refused_for_good(
        random in vec(any::<u8>(), 0..256),
        reply in select(replies::REPLIES.to_vec()),
        overwrites in vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        tail in vec(any::<u8>(), 0..24),
    ) {
        for reply in replies::REPLIES {
            if let Some(converted) = reply.convert(&random) {
                replies::check(reply, &converted);
            }
        }
        let bytes = damaged(reply.example(), overwrites, tail);
        if let Some(converted) = reply.convert(&bytes) {
            replies::check(reply, &converted);
        }
    }

    /// Any JSON as a webhook's answer and as an OpenDSR status, and their
    /// examples with values replaced, as for the callback bodies above.
    #[test]
    fn arbitrary_and_damaged_json_answers_are_used_or_refused_for_good(
        value in any_json(),
        reply in select(vec![Reply::Webhook, Reply::OpenDsr]),
        edits in vec((any::<prop::sample::Index>(), prop_oneof![3 => any_string(), 1 => any_json()]), 1..4),
    ) {
        let bytes = serde_json::to_vec(&value).unwrap();
        for reply in [Reply::Webhook, Reply::OpenDsr] {
            replies::check(reply, &reply.convert(&bytes).expect("JSON is not decoded first"));
        }
        let bytes = edited(&reply.example(), edits);
        replies::check(reply, &reply.convert(&bytes).expect("JSON is not decoded first"));
    }

    /// Any string as a page token of every list method.
    #[test]
    fn arbitrary_page_tokens_never_make_a_list_panic(token in any::<String>()) {
        for outcome in rpc::page_token(&token) {
            prop_assert!(outcome.map_err(|v| v.is_empty()) != Err(true));
        }
    }
}
