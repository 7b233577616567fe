//! The completion record's `export_sha256`, hashed in the transaction that
//! closes an access or portability request.
//!
//! The export document is a function of the record and the stored data
//! records (see [`crate::domain::export`]), so its digest can be fixed when
//! the request closes and named by the record, which is immutable from
//! then on. The hash is taken from the same bytes the export stream
//! writes, read through the closing transaction's connection one batch at
//! a time (a result's records, then each uploaded chunk), so it holds at
//! most one chunk whatever the answer's size. The cost falls on that one
//! transaction, about as long as streaming the export takes (the whole
//! closing call for 100,000 records: `dsr-bench access-report`'s
//! `close_ms` in `docs/benchmarks.md`), once per request, instead of on
//! every later reader.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::opened::{batch_records, record_batches};
use super::{Backend, StoreError};
use crate::domain::export::ExportJson;
use crate::domain::{CompletionRecord, InstructionState};
use crate::seal::Keyring;

/// The SHA-256 (hex) of `record`'s export document.
pub(super) async fn export_sha256(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    record: &CompletionRecord,
) -> Result<String, StoreError> {
    let mut hash = Sha256::new();
    let (mut doc, head) = ExportJson::head(record);
    hash.update(&head);
    for line in &record.lines {
        hash.update(doc.open(line));
        if line.state == InstructionState::Completed {
            let id = line.instruction_id;
            for batch in record_batches(conn, backend, id).await? {
                for r in batch_records(conn, backend, keys, id, batch).await? {
                    hash.update(doc.record(&r));
                }
            }
        }
        hash.update(doc.close());
    }
    hash.update(doc.tail());
    Ok(hex::encode(hash.finalize()))
}
