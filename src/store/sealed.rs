//! Personal data in the store's columns: sealed on the way in, opened on
//! the way out (see [`crate::seal`]). Four columns hold it: the request's
//! subject identities (`requests.subject`), each instruction's payload
//! (`instructions.payload`, the identities its processor accepts), the
//! data records a processor returned with its result
//! (`instructions.sealed_records`) and those it uploaded in chunks
//! (`data_record_chunks.sealed`, read in `opened`); a webhook processor's
//! signing secret (`processors.webhook_secret`) is sealed the same way.
//! Each value is bound to its column and row. A value written before
//! sealing existed (JSON) is still read, until the resealing pass
//! ([`Store::reseal`]) seals it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::opened::{open_json, result_records};
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
        if let Some(result) = change.result.take() {
            let (result, records) = result.split_records();
            change.data_records = records.len() as u32;
            change.sealed_records =
                (!records.is_empty()).then(|| self.seal_json(&records, RECORDS, change.id));
            change.result = Some(result);
        }
        change
    }

    /// The data records a processor returned for an instruction: none
    /// once they were erased.
    pub async fn data_records(&self, id: InstructionId) -> Result<Vec<DataRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        result_records(&mut conn, self.backend, &self.keys, id).await
    }

    /// The idempotency fingerprint as stored: a keyed hash of the
    /// content's SHA-256 (`h:` and hex), so that the database alone cannot
    /// confirm a guessed identity.
    pub(super) fn keyed_fingerprint(&self, sha256: &str) -> String {
        format!("h:{}", self.keys.keyed_hash(&["fingerprint", sha256]))
    }
}
