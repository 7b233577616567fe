//! Tests of `http`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// `docs/openapi.yaml` names exactly the routes served, and each of its
/// schemas exactly the fields its JSON type writes (all filled in).
#[test]
fn openapi_matches_the_implementation() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let served: BTreeSet<String> = [ACKNOWLEDGE, COMPLETE, PULL, RECORDS]
        .map(String::from)
        .into();
    assert_eq!(keys(&doc["paths"]), served);
    for path in &served {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }

    let result = json::InstructionResult {
        outcome: "OUTCOME_DENIED".into(),
        exception: "DELETION_EXCEPTION_CCPA_LEGAL_OBLIGATION".into(),
        explanation: "e".into(),
        reason: "r".into(),
        sub_processors: vec![json::SubProcessor {
            name: "n".into(),
            country: "US".into(),
        }],
        records: vec![json::DataRecord {
            category: "c".into(),
            category_label: "l".into(),
            field: "f".into(),
            value: "v".into(),
            source: "s".into(),
            purpose: "p".into(),
            collected_at: "2026-01-01T00:00:00Z".into(),
            disclosed_to: vec!["d".into()],
            sold_or_shared: true,
        }],
    };
    let identity = json::Identity {
        identity_type: "IDENTITY_TYPE_EMAIL".into(),
        value: "v".into(),
    };
    let instruction = json::Instruction {
        instruction_id: "i".into(),
        request_id: "r".into(),
        processor_id: "p".into(),
        kind: "k".into(),
        jurisdiction: "j".into(),
        submitted_at: "t".into(),
        subject_identities: vec![identity.clone()],
        state: "s".into(),
        attempts: 1,
        reminders: 1,
        result: Some(result.clone()),
        resolved_by: "processor".into(),
        lease_expires_at: Some("t".into()),
        access_scope: "ACCESS_SCOPE_CATEGORIES".into(),
        lookback_start: "t".into(),
    };
    let error = json::Error {
        code: "c".into(),
        message: "m".into(),
        field_violations: vec![json::FieldViolation {
            field: "f".into(),
            description: "d".into(),
        }],
    };
    let schemas = &doc["components"]["schemas"];
    let samples: Vec<(&str, Value)> = vec![
        ("InstructionResult", serde_json::to_value(&result).unwrap()),
        (
            "SubProcessor",
            serde_json::to_value(&result.sub_processors[0]).unwrap(),
        ),
        (
            "DataRecord",
            serde_json::to_value(&result.records[0]).unwrap(),
        ),
        ("Identity", serde_json::to_value(&identity).unwrap()),
        ("Instruction", serde_json::to_value(&instruction).unwrap()),
        (
            "CompleteBody",
            serde_json::to_value(json::CompleteBody {
                result: Some(result.clone()),
            })
            .unwrap(),
        ),
        (
            "UploadBody",
            serde_json::to_value(json::UploadBody {
                chunk_index: 1,
                records: result.records.clone(),
            })
            .unwrap(),
        ),
        (
            "UploadAnswer",
            serde_json::to_value(json::UploadAnswer {
                instruction_id: "i".into(),
                chunks: 1,
                records: 1,
            })
            .unwrap(),
        ),
        (
            "PullBody",
            serde_json::to_value(json::PullBody {
                max_instructions: 1,
            })
            .unwrap(),
        ),
        (
            "PullAnswer",
            serde_json::to_value(json::PullAnswer {
                instructions: vec![instruction.clone()],
                cancellations: vec![json::Cancellation {
                    instruction_id: "i".into(),
                    reason: "r".into(),
                }],
            })
            .unwrap(),
        ),
        ("Error", serde_json::to_value(&error).unwrap()),
        (
            "Cancellation",
            serde_json::to_value(json::Cancellation {
                instruction_id: "i".into(),
                reason: "r".into(),
            })
            .unwrap(),
        ),
    ];
    assert_eq!(
        keys(schemas),
        samples.iter().map(|(n, _)| n.to_string()).collect()
    );
    for (name, sample) in &samples {
        let schema = &schemas[*name];
        assert_eq!(keys(&schema["properties"]), keys(sample), "{name}");
        for required in schema["required"].as_array().into_iter().flatten() {
            assert!(
                sample.get(required.as_str().unwrap()).is_some(),
                "{name}.{required}"
            );
        }
    }
    for outcome in schemas["InstructionResult"]["properties"]["outcome"]["enum"]
        .as_array()
        .unwrap()
    {
        let name = outcome.as_str().unwrap();
        assert!(pb::Outcome::from_str_name(name).is_some(), "{name}");
    }
    // The documented examples are bodies the server takes.
    let example =
        &doc["paths"][COMPLETE]["post"]["requestBody"]["content"]["application/json"]["example"];
    let body: json::CompleteBody = serde_json::from_value(example.clone()).unwrap();
    json::result_pb(body.result.unwrap()).unwrap();
    let example =
        &doc["paths"][PULL]["post"]["requestBody"]["content"]["application/json"]["example"];
    serde_json::from_value::<json::PullBody>(example.clone()).unwrap();
}
