//! Submitting load: the deletion request every scenario sends, and a pool
//! of concurrent submitters, each on its own connection, that sends a fixed
//! number of them. A submit that fails with a transient code is retried
//! with the same `request_id` (the API is idempotent on it), so every
//! request counted was stored exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use indicatif::ProgressBar;
use tonic::Code;

use crate::target::Target;

/// Submits before a transient failure becomes fatal.
const ATTEMPTS: u32 = 5;

/// A request the server accepted.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Its id.
    pub request_id: String,
    /// When the (first) submit call started.
    pub started: SystemTime,
}

/// What a pool of submitters did.
#[derive(Debug, Default)]
pub struct Batch {
    /// The accepted requests.
    pub submitted: Vec<Submitted>,
    /// Failed submit calls (each retried).
    pub errors: u64,
    /// The last of those failures, for the log.
    pub last_error: Option<String>,
}

/// A verified CCPA deletion request for one e-mail address, fanned out to
/// `processor_ids` only (so other processors of a shared orchestrator are
/// left alone).
pub fn deletion(request_id: String, processor_ids: &[String]) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        subject_identities: vec![pb::SubjectIdentity {
            r#type: pb::IdentityType::Email as i32,
            value: format!("bench-{request_id}@example.com"),
        }],
        request_id,
        kind: pb::RequestKind::Delete as i32,
        jurisdiction: pb::Jurisdiction::Ccpa as i32,
        submitted_at: None,
        channel: "web_form".into(),
        requester: pb::Requester::Self_ as i32,
        verification: Some(pb::Verification {
            level: pb::VerificationLevel::ReasonablyHigh as i32,
            method: "dsr-bench".into(),
        }),
        processor_ids: processor_ids.to_vec(),
        labels: Default::default(),
        access_scope: 0,
        requester_evidence: String::new(),
        lookback_start: None,
    }
}

/// A fresh request id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether a failed submit may be repeated.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
    )
}

/// A failed call in one line: code and message.
pub fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Submits `count` requests with `clients` concurrent submitters, advancing
/// `bar` by one per accepted request.
pub async fn submit_all(
    target: &Target,
    count: u64,
    clients: u32,
    processor_ids: &[String],
    bar: &ProgressBar,
) -> anyhow::Result<Batch> {
    let next = Arc::new(AtomicU64::new(0));
    let processor_ids: Arc<[String]> = processor_ids.into();
    let mut tasks = Vec::new();
    for _ in 0..clients.min(count.try_into().unwrap_or(u32::MAX)) {
        let client = RequestServiceClient::new(target.channel().await?);
        let (next, ids, bar) = (next.clone(), processor_ids.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            submitter(client, next, count, ids, bar).await
        }));
    }
    let mut batch = Batch::default();
    for task in tasks {
        let part = task.await.context("a submitter panicked")??;
        batch.submitted.extend(part.submitted);
        batch.errors += part.errors;
        batch.last_error = part.last_error.or(batch.last_error);
    }
    Ok(batch)
}

/// One submitter: takes the next number until `count` are taken.
async fn submitter(
    mut client: RequestServiceClient<tonic::transport::Channel>,
    next: Arc<AtomicU64>,
    count: u64,
    processor_ids: Arc<[String]>,
    bar: ProgressBar,
) -> anyhow::Result<Batch> {
    let mut batch = Batch::default();
    while next.fetch_add(1, Ordering::Relaxed) < count {
        let request_id = new_id();
        let started = SystemTime::now();
        let mut attempt = 1;
        loop {
            let call = client.submit_request(deletion(request_id.clone(), &processor_ids));
            match call.await {
                Ok(_) => break,
                Err(status) if is_transient(status.code()) && attempt < ATTEMPTS => {
                    batch.errors += 1;
                    batch.last_error = Some(describe(&status));
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(status) => {
                    bail!(
                        "SubmitRequest failed after {attempt} attempt(s): {}",
                        describe(&status)
                    )
                }
            }
        }
        batch.submitted.push(Submitted {
            request_id,
            started,
        });
        bar.inc(1);
    }
    Ok(batch)
}
