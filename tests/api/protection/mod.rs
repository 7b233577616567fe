//! Protection of the personal data the orchestrator holds: sealed at rest,
//! erased once a request is done, a suppression list in its place, keys
//! that rotate.

mod at_rest;
mod counted;
mod erasure;
mod keys;
mod suppression;

use std::time::{Duration, Instant};

use dsr_orchestrator::pb;
use dsr_orchestrator::seal::Keyring;

use crate::harness::*;

/// Uploads chunk 0 of `instruction`'s data records: one identifier,
/// `loyalty QX-5521`.
pub async fn upload_one_record(app: &TestApp, token: &str, instruction: &str) {
    app.instructions
        .clone()
        .upload_data_records(authed(
            token,
            tokio_stream::iter([pb::UploadDataRecordsRequest {
                instruction_id: instruction.to_string(),
                chunk_index: 0,
                records: vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "loyalty QX-5521".into(),
                    ..Default::default()
                }],
            }]),
        ))
        .await
        .unwrap();
}

/// Every text the database holds where personal data could be, with the
/// table and column it is in.
pub async fn stored_texts(db: &TestDb) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (table, columns) in [
        (
            "requests",
            "id, subject, fingerprint, labels, verification_method, cancel_reason",
        ),
        (
            "instructions",
            "id, payload, result, sealed_records, last_error",
        ),
        ("request_events", "request_id, body"),
        ("completion_records", "request_id, canonical_json"),
        ("delivery_attempts", "instruction_id, error_message"),
        ("suppressions", "hash, identity_type"),
        ("data_record_chunks", "instruction_id, sealed"),
    ] {
        let names: Vec<&str> = columns.split(", ").collect();
        for row in db.texts(&format!("select {columns} from {table}")).await {
            for (name, value) in names.iter().zip(row) {
                if let Some(value) = value {
                    all.push((format!("{table}.{name}"), value));
                }
            }
        }
    }
    all
}

/// Asserts that none of `values` appears in the database, in any case.
pub async fn assert_nowhere(db: &TestDb, values: &[&str]) {
    for (column, text) in stored_texts(db).await {
        let text = text.to_lowercase();
        for value in values {
            assert!(
                !text.contains(&value.to_lowercase()),
                "{value:?} is in the clear in {column}"
            );
        }
    }
}

/// Waits (bounded) until `request_id`'s personal data is erased.
pub async fn wait_erased(app: &TestApp, request_id: &str) -> pb::DataSubjectRequest {
    let started = Instant::now();
    loop {
        let r = get_request(app, request_id).await;
        if r.identities_erased_at.is_some() {
            return r;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not erased");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A deletion of several distinctive identities.
pub fn deletion_of(email: &str, phone: &str, name: &str) -> pb::SubmitRequestRequest {
    let mut req = deletion(email);
    req.subject_identities = vec![
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Email as i32,
            value: email.into(),
        },
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Phone as i32,
            value: phone.into(),
        },
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Name as i32,
            value: name.into(),
        },
    ];
    req
}

/// A keys file whose active key is `active`, with `others` besides, and
/// the tests' HMAC secret (the fingerprints and the list stay valid).
pub fn keys_file(active: (&str, &str), others: &[(&str, &str)]) -> String {
    let secret = TEST_KEYS
        .lines()
        .find_map(|l| l.strip_prefix("hmac_secret: "))
        .expect("the tests' secret");
    let mut text = format!("active: {}\nkeys:\n", active.0);
    for (id, key) in std::iter::once(&active).chain(others) {
        text.push_str(&format!("  - id: {id}\n    key: {key}\n"));
    }
    text.push_str(&format!("hmac_secret: {secret}\n"));
    text
}

/// A fresh random key, base64.
pub fn new_key() -> String {
    let text = Keyring::generate("x");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .unwrap()
        .to_string()
}
