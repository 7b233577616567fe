//! Personal data in the store's columns: sealed on the way in, opened on
//! the way out (see [`crate::seal`]). Four columns hold it: the request's
//! subject identities (`requests.subject`), each instruction's payload
//! (`instructions.payload`, the identities its processor accepts), the
//! data records a processor returned with its result
//! (`instructions.sealed_records`, or the disclosures a categories-only
//! federated answer carried in their place) and those it uploaded in chunks
//! (`data_record_chunks.sealed`, read in `opened`); a webhook processor's
//! signing secret (`processors.webhook_secret`) is sealed the same way.
//! Each value is bound to its column and row. A value written before
//! sealing existed (JSON) is still read, until the resealing pass
//! ([`Store::reseal`]) seals it.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::instruction_id;
use super::opened::{ResultData, open_json, records_of_row};
use super::sql::Sql;
use super::transition::Change;
use super::{Store, StoreError};
use crate::domain::{DataRecord, InstructionId};
use crate::seal::{Keyring, bound};

/// The columns that hold personal data.
pub(super) const SUBJECT: &str = "requests.subject";
/// An instruction's identities.
pub(super) const PAYLOAD: &str = "instructions.payload";
/// An instruction's returned data records.
pub(super) use super::opened::RECORDS;
/// A webhook processor's signing secret: not personal data, but a secret
/// that must be read back to sign with, so it is sealed the same way.
pub(super) const WEBHOOK_SECRET: &str = "processors.webhook_secret";

impl Store {
    /// The keyring.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// `value` as JSON, sealed for `column` of the row `id`.
    pub(super) fn seal_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
        column: &str,
        id: impl std::fmt::Display,
    ) -> String {
        let json = serde_json::to_vec(value).expect("domain values always serialise");
        self.keys.seal(&json, &bound(column, id))
    }

    /// Opens `text`, sealed for `column` of the row `id` (or written as
    /// JSON before sealing existed).
    pub(super) fn open_json<T: DeserializeOwned>(
        &self,
        text: &str,
        column: &str,
        id: impl std::fmt::Display,
    ) -> Result<T, StoreError> {
        open_json(&self.keys, text, column, id)
    }

    /// `change` with its result's data records taken out of the result
    /// and sealed apart.
    pub(super) fn sealing_records(&self, mut change: Change) -> Change {
        if let Some(mut result) = change.result.take() {
            let carried = result.carried.take();
            let (result, records) = result.split_records();
            change.data_records = records.len() as u32;
            change.sealed_records = match carried {
                // A line counts the pieces its answer accounts for: those
                // the disclosures were made of (see
                // `dispatch::federation_data`).
                Some(carried) => {
                    debug_assert!(records.is_empty(), "carried with records");
                    // A downstream orchestrator's count, held in a
                    // 32-bit column: one beyond it is its largest value,
                    // not a failed batch.
                    change.data_records = carried.pieces.min(i32::MAX as u64) as u32;
                    let data = ResultData::Carried {
                        carried_disclosures: *carried,
                    };
                    Some(self.seal_json(&data, RECORDS, change.id))
                }
                None => (!records.is_empty()).then(|| self.seal_json(&records, RECORDS, change.id)),
            };
            change.result = Some(result);
        }
        change
    }

    /// The data records the processors returned with the results of
    /// `ids` (none once erased), in one read: a page of instructions would
    /// otherwise take one per row. Instructions of cancelled requests are
    /// left out, as their data is not given out (see `access_report`).
    /// Each instruction's records open on their own, so one whose seal
    /// does not open gets its error and the others their records.
    pub async fn data_records_of(
        &self,
        ids: &[InstructionId],
    ) -> Result<HashMap<InstructionId, Result<Vec<DataRecord>, StoreError>>, StoreError> {
        let mut opened = HashMap::new();
        if ids.is_empty() {
            return Ok(opened);
        }
        let rows = Sql::new(
            self.backend,
            "select i.id, i.sealed_records, i.result from instructions i \
             join requests r on r.id = i.request_id where r.status <> 'CANCELLED' and ",
        )
        .in_list("i.id", ids.iter().map(ToString::to_string))
        .query()
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let id = instruction_id(row, "id")?;
            opened.insert(id, records_of_row(&self.keys, row, id));
        }
        Ok(opened)
    }

    /// The idempotency fingerprint as stored: a keyed hash of the
    /// content's SHA-256 (`h:` and hex), so that the database alone cannot
    /// confirm a guessed identity.
    pub(super) fn keyed_fingerprint(&self, sha256: &str) -> String {
        format!("h:{}", self.keys.keyed_hash(&["fingerprint", sha256]))
    }
}
