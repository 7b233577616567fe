//! `ExportAccessData`: the portable export of a finished access or
//! portability request, streamed.
//!
//! The JSON form is one document, `access-export.json`, whose shape is
//! published as `docs/access-export.schema.json` (format
//! `dsr-orchestrator/access-export`, version 1): the request's facts, then
//! each processor in id order with how it answered and its records. The
//! CSV form is one file per category present, `<category>.csv`, with a
//! header row. Either is written as it is read, one batch of records at a
//! time, in chunks of [`CHUNK_BYTES`], each file's SHA-256 computed on the
//! way and sent with its last chunk. The document holds nothing that
//! changes between two exports of the same request (no time of export), so
//! its digest does not change either. Each file's fetch, with its digest,
//! goes on the request's audit trail before its last chunk is sent.

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use super::access_report::{Fetch, batches_of, read};
use super::error::ApiError;
use crate::domain::{CATEGORIES, CompletionRecord, DataRecord, InstructionState};
use crate::pb;
use crate::store::Store;
use crate::wire::{self, json};

/// Most bytes in one chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// The JSON document's format name and version.
pub const FORMAT: &str = "dsr-orchestrator/access-export";
/// Its version.
pub const VERSION: u32 = 1;

type Sender = mpsc::Sender<Result<pb::ExportChunk, Status>>;

/// What a finished file is recorded against.
struct Fetched<'a> {
    store: &'a Store,
    record: &'a CompletionRecord,
    fetch: &'a Fetch,
}

/// One file being sent.
struct File<'a> {
    name: String,
    buf: Vec<u8>,
    hash: Sha256,
    tx: &'a Sender,
}

impl<'a> File<'a> {
    fn new(name: &str, tx: &'a Sender) -> Self {
        Self {
            name: name.to_string(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            hash: Sha256::new(),
            tx,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Status> {
        self.hash.update(bytes);
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.send(String::new()).await?;
        }
        Ok(())
    }

    async fn send(&mut self, sha256: String) -> Result<(), Status> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        let chunk = pb::ExportChunk {
            file: self.name.clone(),
            data,
            sha256,
        };
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| Status::cancelled("the reader went away"))
    }

    /// Sends the last chunk, with the file's digest, once the fetch is on
    /// the audit trail.
    async fn finish(mut self, fetched: &Fetched<'_>) -> Result<(), Status> {
        let digest = hex::encode(std::mem::take(&mut self.hash).finalize());
        let what = format!("export {} sha256 {digest}", self.name);
        fetched
            .fetch
            .record(fetched.store, fetched.record, &what)
            .await?;
        self.send(digest).await
    }
}

/// Sends the export of `record` in `format` into `tx`.
/// (`digest` is the record's, which the JSON document names.)
pub async fn stream(
    store: Store,
    record: CompletionRecord,
    digest: String,
    format: pb::ExportFormat,
    fetch: Fetch,
    tx: Sender,
) {
    let fetched = Fetched {
        store: &store,
        record: &record,
        fetch: &fetch,
    };
    let sent = match format {
        pb::ExportFormat::Csv => csv(&fetched, &tx).await,
        _ => json_document(&fetched, &digest, &tx).await,
    };
    if let Err(status) = sent {
        let _ = tx.send(Err(status)).await;
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("export values serialise")
}

fn record_json(r: &DataRecord) -> json::DataRecord {
    json::record_json(&wire::data_record_pb(r))
}

async fn json_document(fetched: &Fetched<'_>, digest: &str, tx: &Sender) -> Result<(), Status> {
    let (store, record) = (fetched.store, fetched.record);
    let mut file = File::new("access-export.json", tx);
    let request = serde_json::json!({
        "request_id": record.request_id.to_string(),
        "kind": record.kind.as_str(),
        "jurisdiction": record.jurisdiction.as_str(),
        "submitted_at": wire::json::time(&wire::timestamp(record.submitted_at)),
        "responded_at": wire::json::time(&wire::timestamp(record.responded_at)),
        "record_digest": digest,
    });
    let head = format!(
        r#"{{"format":"{FORMAT}","version":{VERSION},"request":{},"processors":["#,
        String::from_utf8(to_json(&request)).expect("JSON is UTF-8")
    );
    file.write(head.as_bytes()).await?;
    for (n, line) in record.lines.iter().enumerate() {
        let mut answer = serde_json::json!({
            "processor_id": line.processor_id.as_str(),
            "display_name": line.display_name,
            "state": line.state.as_str(),
        });
        if let Some(e) = line.exception {
            answer["exception"] = e.as_str().into();
            answer["explanation"] = line.explanation.clone().into();
        }
        if line.state == InstructionState::Failed {
            answer["reason"] = line.reason.clone().into();
        }
        let mut opening = to_json(&answer);
        opening.pop(); // the closing brace: the records follow
        if n > 0 {
            file.write(b",").await?;
        }
        file.write(&opening).await?;
        file.write(br#","records":["#).await?;
        let mut first = true;
        if line.state == InstructionState::Completed {
            for batch in batches_of(store, line.instruction_id).await? {
                for r in read(store, line.instruction_id, batch).await? {
                    if !first {
                        file.write(b",").await?;
                    }
                    first = false;
                    file.write(&to_json(&record_json(&r))).await?;
                }
            }
        }
        file.write(b"]}").await?;
    }
    file.write(b"]}").await?;
    file.finish(fetched).await
}

/// The CSV columns.
const COLUMNS: &str = "processor_id,field,value,source,purpose,collected_at,disclosed_to,sold_or_shared,category_label\r\n";

/// `text` as one CSV field (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

async fn csv(fetched: &Fetched<'_>, tx: &Sender) -> Result<(), Status> {
    let (store, record) = (fetched.store, fetched.record);
    let completed: Vec<_> = record
        .lines
        .iter()
        .filter(|l| l.state == InstructionState::Completed)
        .collect();
    // Which categories are there, then one file for each, in the
    // statute's order: one pass over the records per file.
    let mut present = std::collections::BTreeSet::new();
    for line in &completed {
        for batch in batches_of(store, line.instruction_id).await? {
            for r in read(store, line.instruction_id, batch).await? {
                present.insert(r.category);
            }
        }
    }
    for category in CATEGORIES.iter().filter(|c| present.contains(**c)) {
        let mut file = File::new(&format!("{category}.csv"), tx);
        file.write(COLUMNS.as_bytes()).await?;
        for line in &completed {
            for batch in batches_of(store, line.instruction_id).await? {
                for r in read(store, line.instruction_id, batch).await? {
                    if r.category != *category {
                        continue;
                    }
                    let j = record_json(&r);
                    let row = [
                        field(line.processor_id.as_str()),
                        field(&j.field),
                        field(&j.value),
                        field(&j.source),
                        field(&j.purpose),
                        field(&j.collected_at),
                        field(&j.disclosed_to.join("; ")),
                        (if j.sold_or_shared { "true" } else { "false" }).to_string(),
                        field(&j.category_label),
                    ]
                    .join(",");
                    file.write(row.as_bytes()).await?;
                    file.write(b"\r\n").await?;
                }
            }
        }
        file.finish(fetched).await?;
    }
    Ok(())
}

/// `FAILED_PRECONDITION` unless the export holds pieces the person asked
/// for: specific pieces of an access request, or portability.
pub fn exportable(pieces: bool) -> Result<(), ApiError> {
    if pieces {
        Ok(())
    } else {
        Err(ApiError::FailedPrecondition(
            "the person asked for categories only: there are no specific pieces to export".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }
}
