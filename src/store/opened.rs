//! Sealed data records read through a given connection: the records of
//! an instruction's result and of its uploaded chunks, opened with the
//! keyring, in one order ([`RecordBatch`]) for every reader: the report,
//! the export, and the export's hash, which must match byte for byte. The store's own readers pass a pooled connection; the
//! transaction that closes an access request passes its own, to hash the
//! export it will name (see `export_digest`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::codec::from_opt_json;
use super::sql::Sql;
use super::{Backend, StoreError};
use crate::domain::{DataRecord, Disclosures, InstructionId, InstructionResult, MAX_DATA_RECORDS};
use crate::seal::{Keyring, bound};

/// An instruction's returned data records.
pub(super) const RECORDS: &str = "instructions.sealed_records";
/// A chunk's sealed column, for binding.
pub(super) const CHUNK: &str = "data_record_chunks.sealed";

/// What `instructions.sealed_records` holds (as JSON, sealed): the
/// result's data records (an array), or, for a categories-only federated
/// answer, the downstream report's disclosures carried in their place (an
/// object; see `dispatch::federation_data`).
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ResultData {
    /// The records that came with the result.
    Records(Vec<DataRecord>),
    /// The disclosures a federated answer carried.
    Carried {
        /// The downstream report's totals.
        carried_disclosures: Disclosures,
    },
}

/// Read by the JSON's first token, an array or an object, without the
/// buffering of `#[serde(untagged)]`, which would hold a result's records
/// (up to 10,000) twice to try each shape.
impl<'de> Deserialize<'de> for ResultData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Shape)
    }
}

struct Shape;

impl<'de> serde::de::Visitor<'de> for Shape {
    type Value = ResultData;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of data records, or an object of carried disclosures")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ResultData, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_DATA_RECORDS));
        while let Some(record) = seq.next_element()? {
            records.push(record);
        }
        Ok(ResultData::Records(records))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ResultData, A::Error> {
        let mut carried = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "carried_disclosures" {
                carried = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        carried
            .map(|carried_disclosures| ResultData::Carried {
                carried_disclosures,
            })
            .ok_or_else(|| serde::de::Error::missing_field("carried_disclosures"))
    }
}

impl ResultData {
    fn records(self) -> Vec<DataRecord> {
        match self {
            Self::Records(records) => records,
            Self::Carried { .. } => Vec::new(),
        }
    }
}

/// Where an instruction's data records are, in the order every reader
/// takes them: its result's, then each uploaded chunk by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordBatch {
    /// The records that came with the result.
    Result,
    /// One uploaded chunk.
    Chunk(u32),
}

/// The batches of instruction `id`'s records, in order.
pub(super) async fn record_batches(
    conn: &mut AnyConnection,
    backend: Backend,
    id: InstructionId,
) -> Result<Vec<RecordBatch>, StoreError> {
    let chunks = chunk_indexes(conn, backend, id).await?;
    Ok(std::iter::once(RecordBatch::Result)
        .chain(chunks.into_iter().map(RecordBatch::Chunk))
        .collect())
}

/// The records of one batch of instruction `id`.
pub(super) async fn batch_records(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    id: InstructionId,
    batch: RecordBatch,
) -> Result<Vec<DataRecord>, StoreError> {
    match batch {
        RecordBatch::Result => result_records(conn, backend, keys, id).await,
        RecordBatch::Chunk(index) => chunk_records(conn, backend, keys, id, index).await,
    }
}

/// The row a chunk's seal is bound to.
pub(super) fn chunk_row(
    instruction: impl std::fmt::Display,
    index: impl std::fmt::Display,
) -> String {
    format!("{instruction}/{index}")
}

/// Opens `text` with `keys`, sealed for `column` of the row `id`; a plain
/// JSON value (one the resealing pass has not sealed yet) is read as it is.
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
    result_data(conn, backend, keys, id)
        .await
        .map(ResultData::records)
}

/// What instruction `id`'s result holds, read through `conn`.
async fn result_data(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    id: InstructionId,
) -> Result<ResultData, StoreError> {
    let row = Sql::new(
        backend,
        "select sealed_records, result from instructions where id = ",
    )
    .bind(id.to_string())
    .query()
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::not_found("instruction", id))?;
    data_of_row(keys, &row, id)
}

/// The data records of instruction `id`'s result, from its row's
/// `sealed_records` and `result`.
pub(super) fn records_of_row(
    keys: &Keyring,
    row: &AnyRow,
    id: InstructionId,
) -> Result<Vec<DataRecord>, StoreError> {
    data_of_row(keys, row, id).map(ResultData::records)
}

fn data_of_row(keys: &Keyring, row: &AnyRow, id: InstructionId) -> Result<ResultData, StoreError> {
    match row.try_get::<Option<String>, _>("sealed_records")? {
        Some(text) => open_json(keys, &text, RECORDS, id),
        // Written before records were sealed apart: in the result.
        None => Ok(ResultData::Records(
            from_opt_json::<InstructionResult>(row, "result")?
                .map(|r| r.records)
                .unwrap_or_default(),
        )),
    }
}

/// The disclosures of one batch of instruction `id`'s data (the records
/// folded, or what a federated answer carried), read through `conn`.
pub(super) async fn batch_disclosures(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    id: InstructionId,
    batch: RecordBatch,
) -> Result<Disclosures, StoreError> {
    let records = match batch {
        RecordBatch::Result => match result_data(conn, backend, keys, id).await? {
            ResultData::Records(records) => records,
            ResultData::Carried {
                carried_disclosures,
            } => return Ok(carried_disclosures),
        },
        RecordBatch::Chunk(index) => chunk_records(conn, backend, keys, id, index).await?,
    };
    let mut disclosed = Disclosures::default();
    for r in &records {
        disclosed.add(r);
    }
    Ok(disclosed)
}

/// The indexes of an instruction's chunks, in order, read through `conn`.
pub(super) async fn chunk_indexes(
    conn: &mut AnyConnection,
    backend: Backend,
    instruction: InstructionId,
) -> Result<Vec<u32>, StoreError> {
    let rows = Sql::new(
        backend,
        "select chunk from data_record_chunks where instruction_id = ",
    )
    .bind(instruction.to_string())
    .push(" order by chunk")
    .query()
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<i64, _>("chunk")? as u32))
        .collect()
}

/// The records of one chunk (none once erased), read through `conn`.
pub(super) async fn chunk_records(
    conn: &mut AnyConnection,
    backend: Backend,
    keys: &Keyring,
    instruction: InstructionId,
    index: u32,
) -> Result<Vec<DataRecord>, StoreError> {
    let row = Sql::new(
        backend,
        "select sealed from data_record_chunks where instruction_id = ",
    )
    .bind(instruction.to_string())
    .push(" and chunk = ")
    .bind(i64::from(index))
    .query()
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => open_json(
            keys,
            &row.try_get::<String, _>("sealed")?,
            CHUNK,
            chunk_row(instruction, index),
        ),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both shapes of `sealed_records` read back as written: an array as
    /// records, an object as carried disclosures.
    #[test]
    fn result_data_reads_records_and_carried_disclosures() {
        let records = vec![DataRecord {
            category: "inferences".into(),
            category_label: String::new(),
            field: "taste".into(),
            value: "green tea".into(),
            source: String::new(),
            purpose: String::new(),
            collected_at: None,
            disclosed_to: vec![],
            sold_or_shared: false,
        }];
        let json = serde_json::to_string(&records).unwrap();
        let read: ResultData = serde_json::from_str(&json).unwrap();
        assert_eq!(read.records(), records);

        let mut carried_disclosures = Disclosures::default();
        carried_disclosures.add(&records[0]);
        let json = serde_json::to_string(&ResultData::Carried {
            carried_disclosures: carried_disclosures.clone(),
        })
        .unwrap();
        match serde_json::from_str::<ResultData>(&json).unwrap() {
            ResultData::Carried {
                carried_disclosures: read,
            } => assert_eq!(read, carried_disclosures),
            ResultData::Records(r) => panic!("read as records: {r:?}"),
        }
        for neither in ["{}", "3", "\"records\""] {
            assert!(
                serde_json::from_str::<ResultData>(neither).is_err(),
                "{neither}"
            );
        }
    }
}
