//! `access-report`: one access request whose one processor (a pull
//! processor of the bench's own) uploads `--requests` data records in
//! chunks of 1,000, completes, and then has its report streamed back.
//! The figures: records uploaded per second, how long completing the
//! instruction took (closing the request hashes its export into the
//! completion record), records streamed per second in the report, and the
//! server's peak memory over the whole run, which shows whether the
//! report is held whole (it should not be).

use std::time::Instant;

use anyhow::{Context, bail};
use dsr_orchestrator::pb;
use dsr_orchestrator::pb::instruction_service_client::InstructionServiceClient;
use dsr_orchestrator::pb::processor_service_client::ProcessorServiceClient;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;

use super::Bench;
use crate::progress;
use crate::report::Report;
use crate::submission;

/// Records in one uploaded chunk.
const CHUNK: u64 = 1000;

/// `message` with the processor's callback token.
fn authed<T>(token: &MetadataValue<tonic::metadata::Ascii>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", token.clone());
    request
}

/// Runs the scenario.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let count = bench.settings.requests;
    let channel = bench.target.channel().await?;
    let id = format!("bench-report-{}", &submission::new_id()[..8]);
    let registered = ProcessorServiceClient::new(channel.clone())
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(pb::Processor {
                processor_id: id.clone(),
                display_name: "dsr-bench access processor".into(),
                role: pb::ProcessorRole::Vendor as i32,
                country: "JP".into(),
                supported_kinds: vec![pb::RequestKind::Access as i32],
                accepted_identity_types: vec![pb::IdentityType::Email as i32],
                adapter: Some(pb::Adapter {
                    kind: Some(pb::adapter::Kind::Pull(pb::PullAdapter {})),
                }),
                ..Default::default()
            }),
        })
        .await
        .context("cannot register the access processor")?
        .into_inner();
    let token: MetadataValue<_> = format!("Bearer {}", registered.callback_token).parse()?;
    let mut requests = RequestServiceClient::new(channel.clone());
    let mut submission = submission::deletion(submission::new_id(), std::slice::from_ref(&id));
    submission.kind = pb::RequestKind::Access as i32;
    submission.access_scope = pb::AccessScope::SpecificPieces as i32;
    let request_id = requests
        .submit_request(submission)
        .await
        .context("cannot submit the access request")?
        .into_inner()
        .request_id;
    let mut instructions = InstructionServiceClient::new(channel);
    let pulled = instructions
        .pull_instructions(authed(
            &token,
            pb::PullInstructionsRequest {
                max_instructions: 1,
            },
        ))
        .await?
        .into_inner()
        .instructions;
    let Some(instruction) = pulled.into_iter().next() else {
        bail!("the access instruction was not offered to its processor");
    };
    let instruction_id = instruction.instruction_id;

    progress::note(None, &format!("access-report: uploading {count} records"));
    let started = Instant::now();
    let id_of = instruction_id.clone();
    let chunks = (0..count.div_ceil(CHUNK)).map(move |c| pb::UploadDataRecordsRequest {
        instruction_id: id_of.clone(),
        chunk_index: c as u32,
        records: (c * CHUNK..((c + 1) * CHUNK).min(count))
            .map(|n| pb::DataRecord {
                category: if n % 2 == 0 {
                    "identifiers"
                } else {
                    "internet_activity"
                }
                .into(),
                field: "event".into(),
                value: format!("page view {n} of the bench subject"),
                source: "our website".into(),
                purpose: "analytics".into(),
                ..Default::default()
            })
            .collect(),
    });
    let stored = instructions
        .upload_data_records(authed(&token, tokio_stream::iter(chunks)))
        .await
        .context("the upload failed")?
        .into_inner();
    let upload = started.elapsed();
    if stored.records != count {
        bail!("{} records stored, {count} sent", stored.records);
    }
    let closing = Instant::now();
    instructions
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id,
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    ..Default::default()
                }),
            },
        ))
        .await
        .context("cannot complete the instruction")?;
    let close = closing.elapsed();

    progress::note(None, "access-report: streaming the report");
    let started = Instant::now();
    let mut parts = requests
        .get_access_report(pb::GetAccessReportRequest {
            request_id: request_id.clone(),
        })
        .await
        .context("cannot fetch the report")?
        .into_inner();
    let mut pieces = 0u64;
    while let Some(part) = parts.next().await {
        if let Some(pb::access_report_part::Part::Pieces(p)) = part?.part {
            pieces += p.records.len() as u64;
        }
    }
    let streamed = started.elapsed();
    if pieces != count {
        bail!("the report held {pieces} pieces, {count} were uploaded");
    }
    let mut report = bench.report();
    report.requests = 1;
    report.processors = 1;
    report.records = Some(count);
    report.duration_s = (upload + streamed).as_secs_f64();
    report.upload_records_per_sec = Some(count as f64 / upload.as_secs_f64());
    report.report_records_per_sec = Some(count as f64 / streamed.as_secs_f64());
    report.close_ms = Some(close.as_secs_f64() * 1000.0);
    report.records_complete = true;
    Ok(report)
}
