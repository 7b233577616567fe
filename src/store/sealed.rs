//! Personal data in the store's columns: sealed on the way in, opened on
//! the way out (see [`crate::seal`]). Three columns hold it: the request's
//! subject identities (`requests.subject`), each instruction's payload
//! (`instructions.payload`, the identities its processor accepts) and the
//! data records a processor returned (`instructions.sealed_records`); a
//! webhook processor's signing secret (`processors.webhook_secret`) is
//! sealed the same way.
//! Each value is bound to its column and row. A value written before
//! sealing existed (JSON) is still read, until the resealing pass
//! ([`Store::reseal`]) seals it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use sqlx::{AnyConnection, Row};

use super::codec::from_opt_json;
use super::sql::Sql;
use super::transition::Change;
use super::{Backend, Store, StoreError};
use crate::domain::{DataRecord, InstructionId, InstructionResult};
use crate::seal::{Keyring, bound};

/// The columns that hold personal data.
pub(super) const SUBJECT: &str = "requests.subject";
/// An instruction's identities.
pub(super) const PAYLOAD: &str = "instructions.payload";
/// An instruction's returned data records.
pub(super) const RECORDS: &str = "instructions.sealed_records";
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

/// Opens `text` with `keys`, sealed for `column` of the row `id` (or
/// written as JSON before sealing existed).
pub(super) fn open_json<T: DeserializeOwned>(
    keys: &Keyring,
    text: &str,
    column: &str,
    id: impl std::fmt::Display,
) -> Result<T, StoreError> {
    let json = if Keyring::is_sealed(text) {
        keys.open(text, &bound(column, &id))
            .map_err(|e| StoreError::Sealed(format!("{column} of {id}: {e}")))?
    } else {
        text.as_bytes().to_vec()
    };
    serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("{column} of {id}: {e}")))
}

/// The data records of instruction `id`'s result, read through `conn`.
pub(super) async fn result_records(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    id: InstructionId,
) -> Result<Vec<DataRecord>, StoreError> {
    let row = Sql::new(
        backend,
        "select sealed_records, result from instructions where id = ",
    )
    .bind(id.to_string())
    .query()
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::not_found("instruction", id))?;
    match row.try_get::<Option<String>, _>("sealed_records")? {
        Some(text) => open_json(keys, &text, RECORDS, id),
        // Written before records were sealed apart: in the result.
        None => Ok(from_opt_json::<InstructionResult>(&row, "result")?
            .map(|r| r.records)
            .unwrap_or_default()),
    }
}
