//! `ExportAccessData`: the portable export of a completed access or
//! portability request, streamed.
//!
//! The JSON form is one document, `access-export.json`, whose shape is
//! published as `docs/access-export.schema.json` and written by
//! [`ExportJson`]: the request's facts, then each processor in id order
//! with how it answered and its records. Its SHA-256 is the completion
//! record's `export_sha256`, hashed from the same bytes when the request
//! closed. The CSV form is one file per category present,
//! `<category>.csv`, with a header row. Either is written as it is read,
//! one batch of records at a time, in chunks of [`CHUNK_BYTES`], each
//! file's SHA-256 computed on the way and sent with its last chunk. Each
//! file's fetch, with its digest, goes on the request's audit trail before
//! its last chunk is sent.

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use super::access_report::{Fetch, batches_of, read};
use super::error::ApiError;
use crate::domain::export::{ExportJson, rfc3339};
use crate::domain::{CATEGORIES, CompletionRecord};
use crate::pb;
use crate::store::Store;

/// Most bytes in one chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;

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

    /// Adds `bytes`, sending every chunk that fills up (none larger than
    /// [`CHUNK_BYTES`]).
    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Status> {
        self.hash.update(bytes);
        while !bytes.is_empty() {
            let take = bytes.len().min(CHUNK_BYTES - self.buf.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == CHUNK_BYTES {
                self.send(String::new()).await?;
            }
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
pub async fn stream(
    store: Store,
    record: CompletionRecord,
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
        _ => json_document(&fetched, &tx).await,
    };
    if let Err(status) = sent {
        let _ = tx.send(Err(status)).await;
    }
}

/// The JSON document, written by [`ExportJson`] as the closing
/// transaction hashed it into the record's `export_sha256`.
async fn json_document(fetched: &Fetched<'_>, tx: &Sender) -> Result<(), Status> {
    let (store, record) = (fetched.store, fetched.record);
    let mut file = File::new("access-export.json", tx);
    let (mut doc, head) = ExportJson::head(record);
    file.write(&head).await?;
    for line in &record.lines {
        file.write(&doc.open(line)).await?;
        for batch in batches_of(store, line).await? {
            for r in read(store, line.instruction_id, batch).await? {
                file.write(&doc.record(&r)).await?;
            }
        }
        file.write(doc.close()).await?;
    }
    file.write(doc.tail()).await?;
    file.finish(fetched).await
}

/// The CSV columns.
const COLUMNS: &str = "processor_id,field,value,source,purpose,collected_at,disclosed_to,sold_or_shared,category_label\r\n";

/// The first characters of a cell that spreadsheets run as a formula,
/// full-width forms included.
const FORMULA: [char; 10] = [
    '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
];

/// `text` as one CSV field (RFC 4180). A text that a spreadsheet would
/// take for a formula (beginning with `=`, `+`, `-`, `@`, a tab or a
/// carriage return, or their full-width forms, after any white space,
/// which some importers trim) gets a leading `'`, which spreadsheets read
/// as "this is text": the values come from processors, and a cell such as
/// `=HYPERLINK(...)` would otherwise run when the person opens the file.
/// The JSON form keeps every value as given.
fn field(text: &str) -> String {
    let text = match text.starts_with(FORMULA) || text.trim_start().starts_with(FORMULA) {
        true => format!("'{text}"),
        false => text.to_string(),
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

async fn csv(fetched: &Fetched<'_>, tx: &Sender) -> Result<(), Status> {
    let (store, record) = (fetched.store, fetched.record);
    let mut lines = Vec::with_capacity(record.lines.len());
    for line in &record.lines {
        lines.push((line, batches_of(store, line).await?));
    }
    // Which categories are there, then one file for each, in the
    // statute's order: one pass over the records per file.
    let mut present = std::collections::BTreeSet::new();
    for (line, batches) in &lines {
        for batch in batches {
            for r in read(store, line.instruction_id, *batch).await? {
                present.insert(r.category);
            }
        }
    }
    for category in CATEGORIES.iter().filter(|c| present.contains(**c)) {
        let mut file = File::new(&format!("{category}.csv"), tx);
        file.write(COLUMNS.as_bytes()).await?;
        for (line, batches) in &lines {
            for batch in batches {
                for r in read(store, line.instruction_id, *batch).await? {
                    if r.category != *category {
                        continue;
                    }
                    let row = [
                        field(line.processor_id.as_str()),
                        field(&r.field),
                        field(&r.value),
                        field(&r.source),
                        field(&r.purpose),
                        r.collected_at.map(rfc3339).unwrap_or_default(),
                        field(&r.disclosed_to.join("; ")),
                        (if r.sold_or_shared { "true" } else { "false" }).to_string(),
                        field(&r.category_label),
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

    #[test]
    fn csv_fields_that_would_be_formulas_are_text() {
        assert_eq!(
            field("=HYPERLINK(\"http://evil.example\",\"click\")"),
            "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\""
        );
        assert_eq!(field("+1 555 0100"), "'+1 555 0100");
        assert_eq!(field("-5"), "'-5");
        assert_eq!(field("@SUM(1)"), "'@SUM(1)");
        assert_eq!(field("\tcmd"), "'\tcmd");
        assert_eq!(field("\rcmd"), "\"'\rcmd\"");
        assert_eq!(field("a=b"), "a=b");
        assert_eq!(field("  =1+1"), "'  =1+1");
        assert_eq!(field("\n=1+1"), "\"'\n=1+1\"");
        assert_eq!(field("\u{ff1d}1+1"), "'\u{ff1d}1+1");
    }
}
