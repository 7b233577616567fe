//! Tests of `json`.

use super::*;

#[test]
fn results_round_trip_by_proto_names() {
    let json = r#"{"outcome":"OUTCOME_DENIED","exception":"DELETION_EXCEPTION_CCPA_LEGAL_OBLIGATION",
        "explanation":"kept for tax law","records":[{"category":"identifiers","value":"v"}]}"#;
    let parsed: InstructionResult = serde_json::from_str(json).unwrap();
    let message = result_pb(parsed.clone()).unwrap();
    assert_eq!(message.outcome, pb::Outcome::Denied as i32);
    assert_eq!(
        message.exception,
        pb::DeletionException::CcpaLegalObligation as i32
    );
    assert_eq!(result(&message), parsed);
}

#[test]
fn unknown_names_are_violations_and_decode_errors_quote_nothing() {
    let bad = InstructionResult {
        outcome: "DELETED".into(),
        exception: "NOPE".into(),
        ..InstructionResult::default()
    };
    let fields: Vec<String> = result_pb(bad)
        .unwrap_err()
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["outcome", "exception"]);
    let e = serde_json::from_str::<CompleteBody>(
        r#"{"result": {"outcome": 7, "x": "secret@example.com"}}"#,
    )
    .unwrap_err();
    let text = decode_error(&e);
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("line 1"), "{text}");
}
