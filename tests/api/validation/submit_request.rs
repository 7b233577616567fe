//! SubmitRequest: every field of the message, alone and all at once.

use dsr_orchestrator::pb;
use prost_types::Timestamp;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(
    submit_request_table,
    unknown_processor_among_known_ones_is_rejected,
);

/// SubmitRequest: every field, and several problems at once.
async fn submit_request_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let email = || identity(pb::IdentityType::Email, EMAIL);
    let cases: Table<pb::SubmitRequestRequest> = vec![
        (
            "missing request_id",
            submission(|r| r.request_id.clear()),
            &["request_id"],
        ),
        (
            "request_id not a UUID",
            submission(|r| r.request_id = "request-1".into()),
            &["request_id"],
        ),
        (
            "upper-case UUID",
            submission(|r| r.request_id = r.request_id.to_uppercase()),
            &["request_id"],
        ),
        (
            "UUID without hyphens",
            submission(|r| r.request_id = r.request_id.replace('-', "")),
            &["request_id"],
        ),
        (
            "nil UUID",
            submission(|r| r.request_id = uuid::Uuid::nil().to_string()),
            &["request_id"],
        ),
        ("missing kind", submission(|r| r.kind = 0), &["kind"]),
        ("unknown kind", submission(|r| r.kind = 99), &["kind"]),
        (
            "missing jurisdiction",
            submission(|r| r.jurisdiction = 0),
            &["jurisdiction"],
        ),
        (
            "unknown jurisdiction",
            submission(|r| r.jurisdiction = 99),
            &["jurisdiction"],
        ),
        (
            "missing subject",
            submission(|r| r.subject_identities.clear()),
            &["subject_identities"],
        ),
        (
            "21 identities",
            submission(|r| {
                r.subject_identities = (0..21)
                    .map(|i| identity(pb::IdentityType::AccountId, &format!("A-{i}")))
                    .collect()
            }),
            &["subject_identities"],
        ),
        (
            "identity without type",
            submission(|r| r.subject_identities[1].r#type = 0),
            &["subject_identities[1].type"],
        ),
        (
            "identity of unknown type",
            submission(|r| r.subject_identities[1].r#type = 99),
            &["subject_identities[1].type"],
        ),
        (
            "empty identity value",
            submission(|r| r.subject_identities[1].value.clear()),
            &["subject_identities[1].value"],
        ),
        (
            "blank identity value",
            submission(|r| r.subject_identities[1].value = "   ".into()),
            &["subject_identities[1].value"],
        ),
        (
            "1025-character identity value",
            submission(|r| r.subject_identities[1].value = "7".repeat(1025)),
            &["subject_identities[1].value"],
        ),
        (
            "an email address without its @",
            submission(|r| r.subject_identities[0].value = "alice.example.com".into()),
            &["subject_identities[0].value"],
        ),
        (
            "a telephone number that is an email address",
            submission(|r| r.subject_identities[1].value = EMAIL.into()),
            &["subject_identities[1].value"],
        ),
        (
            "an IP address that is none",
            submission(|r| {
                r.subject_identities[1] = identity(pb::IdentityType::IpAddress, "192.0.2.256")
            }),
            &["subject_identities[1].value"],
        ),
        (
            "control character in identity value",
            submission(|r| r.subject_identities[0].value = format!("{EMAIL}\n")),
            &["subject_identities[0].value"],
        ),
        (
            "duplicate identities",
            submission(|r| r.subject_identities = vec![email(), email()]),
            &["subject_identities[1]"],
        ),
        (
            "identities alike but for case and white space",
            submission(|r| {
                let mut same = email();
                same.value = format!(" {} ", same.value.to_uppercase());
                r.subject_identities = vec![email(), same];
            }),
            &["subject_identities[1]"],
        ),
        (
            "submitted_at an hour in the future",
            submission(|r| r.submitted_at = from_now(3600)),
            &["submitted_at"],
        ),
        (
            "submitted_at before 2000",
            submission(|r| {
                r.submitted_at = Some(Timestamp {
                    seconds: 946_684_799,
                    nanos: 0,
                })
            }),
            &["submitted_at"],
        ),
        (
            "submitted_at with negative nanos",
            submission(|r| {
                r.submitted_at = Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: -1,
                })
            }),
            &["submitted_at"],
        ),
        (
            "missing channel",
            submission(|r| r.channel.clear()),
            &["channel"],
        ),
        (
            "65-character channel",
            submission(|r| r.channel = "c".repeat(65)),
            &["channel"],
        ),
        (
            "channel outside [a-z0-9_-]",
            submission(|r| r.channel = "Web Form".into()),
            &["channel"],
        ),
        (
            "missing requester",
            submission(|r| r.requester = 0),
            &["requester"],
        ),
        (
            "unknown requester",
            submission(|r| r.requester = 99),
            &["requester"],
        ),
        (
            "missing verification",
            submission(|r| r.verification = None),
            &["verification"],
        ),
        (
            "missing verification level",
            submission(|r| r.verification.as_mut().unwrap().level = 0),
            &["verification.level"],
        ),
        (
            "unknown verification level",
            submission(|r| r.verification.as_mut().unwrap().level = 99),
            &["verification.level"],
        ),
        (
            "513-character verification method",
            submission(|r| r.verification.as_mut().unwrap().method = "m".repeat(513)),
            &["verification.method"],
        ),
        (
            "verification method with a line break",
            submission(|r| r.verification.as_mut().unwrap().method = "email\nlink".into()),
            &["verification.method"],
        ),
        (
            "malformed processor id",
            submission(|r| r.processor_ids = vec!["intake".into(), "Intake".into()]),
            &["processor_ids[1]"],
        ),
        (
            "unknown processor id",
            submission(|r| r.processor_ids = vec!["nope".into()]),
            &["processor_ids[0]"],
        ),
        (
            "101 processor ids",
            submission(|r| r.processor_ids = (0..101).map(|i| format!("p-{i}")).collect()),
            &["processor_ids"],
        ),
        (
            "processor that does not handle the kind",
            submission(|r| {
                r.kind = pb::RequestKind::Correct as i32;
                r.processor_ids = vec!["intake".into()];
            }),
            &["processor_ids[0]"],
        ),
        (
            "processor that accepts none of the identity types",
            submission(|r| {
                r.subject_identities = vec![identity(pb::IdentityType::Phone, "+1 555 0100")];
                r.processor_ids = vec!["intake".into()];
            }),
            &["processor_ids[0]"],
        ),
        (
            "257-character label value",
            submission(|r| {
                r.labels.insert("ticket".into(), "x".repeat(257));
            }),
            &["labels[ticket]"],
        ),
        (
            "label value with a NUL",
            submission(|r| {
                r.labels.insert("ticket".into(), "T\u{0}1".into());
            }),
            &["labels[ticket]"],
        ),
        (
            "label key outside [a-z0-9_.-]",
            submission(|r| {
                r.labels.insert("Ticket".into(), "T-1".into());
            }),
            &["labels[Ticket]"],
        ),
        (
            "label key too long (named by its first 63 characters)",
            submission(|r| {
                r.labels.insert("k".repeat(100), "v".into());
            }),
            &["labels[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk…]"],
        ),
        (
            "33 labels",
            submission(|r| {
                r.labels = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
            }),
            &["labels"],
        ),
        (
            "everything wrong at once",
            submission(|r| {
                r.request_id = "nope".into();
                r.kind = 99;
                r.jurisdiction = 0;
                r.subject_identities[0].r#type = 42;
                r.subject_identities[1].value.clear();
                r.submitted_at = from_now(3600);
                r.channel = "c".repeat(65);
                r.requester = 0;
                r.verification = None;
                r.processor_ids = vec!["Bad".into()];
            }),
            &[
                "request_id",
                "kind",
                "jurisdiction",
                "subject_identities[0].type",
                "subject_identities[1].value",
                "submitted_at",
                "channel",
                "requester",
                "verification",
                "processor_ids[0]",
            ],
        ),
    ];
    // Nothing is stored yet, so nothing may be after a rejection.
    let mut client = app.requests.clone();
    expect_rejections(
        "SubmitRequest",
        cases,
        async |msg| client.submit_request(msg).await,
        async || (all_requests(&app).await, all_instructions(&app).await),
    )
    .await;
    // The rejections left no trace that blocks a correct submission.
    submit(&app, valid_submission()).await;
    assert_eq!(all_requests(&app).await.len(), 1);
    app.stop().await;
}

/// An unknown id in a list of known ones is rejected and stores nothing.
///
/// The violation's index is not asserted: the server sorts and
/// de-duplicates `processor_ids` before checking them against the registry,
/// so it reports the position in the sorted list (here `processor_ids[0]`
/// for the caller's `processor_ids[1]`).
async fn unknown_processor_among_known_ones_is_rejected(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let msg = submission(|r| r.processor_ids = vec!["intake".into(), "archive".into()]);
    // The index is the caller's: "archive" is the second entry.
    let cases: Table<pb::SubmitRequestRequest> =
        vec![("unknown id after a known one", msg, &["processor_ids[1]"])];
    let mut client = app.requests.clone();
    expect_rejections(
        "SubmitRequest",
        cases,
        async |msg| client.submit_request(msg).await,
        async || (all_requests(&app).await, all_instructions(&app).await),
    )
    .await;
    app.stop().await;
}
