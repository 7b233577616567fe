//! Data records uploaded in chunks (`UploadDataRecords`), for a processor
//! whose answer to an access request is too large for one message.
//!
//! Each chunk is one row of `data_record_chunks`, keyed by its instruction
//! and index and sealed like the records of a result (bound to both), so a
//! chunk sent again after a lost answer is a no-op, never a duplicate. A
//! chunk is taken only while its instruction is open, in a transaction
//! that locks the instruction's row; the final result locks the same row
//! and counts the chunks' records into `data_records` (see
//! `store::transition`), so no chunk slips in after the count. Readers
//! take one chunk at a time ([`Store::batch_records`]), so a report over many
//! records never holds them all.

use sqlx::Row;

use super::aftermath::lock_rows;
use super::opened::{
    CHUNK, RecordBatch, batch_disclosures, batch_records, chunk_row, record_batches,
};
use super::sql::Sql;
use super::{Store, StoreError};
use crate::domain::{
    DataRecord, Disclosures, InstructionId, InstructionState, ProcessorId, RequestKind,
};

/// Most chunks one instruction may have (a million records at most, at
/// 1,000 a chunk).
pub const MAX_CHUNKS: u32 = 1000;

/// What an instruction holds in chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkTotals {
    /// Chunks stored.
    pub chunks: u32,
    /// Records in them.
    pub records: u64,
}

/// Why a chunk is refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkRefused {
    /// The instruction does not exist.
    #[error("instruction {0} not found")]
    NotFound(InstructionId),
    /// The instruction is another processor's.
    #[error("the instruction belongs to another processor")]
    NotYours,
    /// It is final, or not of a kind that returns data.
    #[error("{0}")]
    NotNow(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Stores chunk `index` of `records` for `instruction`, answered by
    /// `processor`; a chunk stored before under the same index is kept as
    /// it was. Returns what the instruction holds in chunks now.
    pub async fn put_chunk(
        &self,
        instruction: InstructionId,
        processor: &ProcessorId,
        index: u32,
        records: &[DataRecord],
    ) -> Result<ChunkTotals, ChunkRefused> {
        // Sealed before the transaction: on SQLite it holds the one writer.
        let sealed = self.seal_json(records, CHUNK, chunk_row(instruction, index));
        let mut tx = self.begin().await?;
        let id = instruction.to_string();
        lock_rows(&mut tx, self.backend, "instructions", vec![id.clone()]).await?;
        let row = Sql::new(
            self.backend,
            "select processor_id, state, kind from instructions where id = ",
        )
        .bind(id.clone())
        .query()
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(ChunkRefused::NotFound(instruction));
        };
        let owner: String = row.try_get("processor_id").map_err(StoreError::from)?;
        if owner != processor.as_str() {
            return Err(ChunkRefused::NotYours);
        }
        let state: String = row.try_get("state").map_err(StoreError::from)?;
        let kind: String = row.try_get("kind").map_err(StoreError::from)?;
        if !kind
            .parse::<RequestKind>()
            .is_ok_and(RequestKind::returns_data)
        {
            return Err(ChunkRefused::NotNow(format!(
                "a {kind} instruction takes no data records"
            )));
        }
        let open = InstructionState::parse(&state).is_some_and(|s| !s.is_terminal());
        if !open {
            return Err(ChunkRefused::NotNow(format!(
                "the instruction is already {state}: upload its records before completing it"
            )));
        }
        let totals = chunk_totals(&mut tx, self.backend, &id).await?;
        let exists = Sql::new(
            self.backend,
            "select 1 as one from data_record_chunks where instruction_id = ",
        )
        .bind(id.clone())
        .push(" and chunk = ")
        .bind(i64::from(index))
        .query()
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .is_some();
        if exists {
            tx.commit().await.map_err(StoreError::from)?;
            return Ok(totals);
        }
        if totals.chunks >= MAX_CHUNKS {
            return Err(ChunkRefused::NotNow(format!(
                "an instruction holds at most {MAX_CHUNKS} chunks"
            )));
        }
        Sql::new(
            self.backend,
            "insert into data_record_chunks (instruction_id, chunk, records, sealed) values (",
        )
        .bind(id.clone())
        .push(", ")
        .bind(i64::from(index))
        .push(", ")
        .bind(records.len() as i64)
        .push(", ")
        .bind(sealed)
        .push(")")
        .query()
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ChunkTotals {
            chunks: totals.chunks + 1,
            records: totals.records + records.len() as u64,
        })
    }

    /// The batches of `instruction`'s data records, in the order every
    /// reader takes them (see [`RecordBatch`]).
    pub async fn record_batches(
        &self,
        instruction: InstructionId,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        record_batches(&mut conn, self.backend, instruction).await
    }

    /// The records of one batch (none once erased).
    pub async fn batch_records(
        &self,
        instruction: InstructionId,
        batch: RecordBatch,
    ) -> Result<Vec<DataRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        batch_records(&mut conn, self.backend, &self.keys, instruction, batch).await
    }

    /// The disclosures of one batch: its records folded, or what a
    /// categories-only federated answer carried in their place (none once
    /// erased).
    pub async fn batch_disclosures(
        &self,
        instruction: InstructionId,
        batch: RecordBatch,
    ) -> Result<Disclosures, StoreError> {
        let mut conn = self.pool.acquire().await?;
        batch_disclosures(&mut conn, self.backend, &self.keys, instruction, batch).await
    }

    /// What `instruction` holds in chunks.
    pub async fn chunk_totals(
        &self,
        instruction: InstructionId,
    ) -> Result<ChunkTotals, StoreError> {
        let mut conn = self.pool.acquire().await?;
        chunk_totals(&mut conn, self.backend, &instruction.to_string()).await
    }
}

async fn chunk_totals(
    conn: &mut sqlx::AnyConnection,
    backend: super::Backend,
    id: &str,
) -> Result<ChunkTotals, StoreError> {
    let row = Sql::new(
        backend,
        "select count(*) as chunks, coalesce(sum(records), 0) as records \
         from data_record_chunks where instruction_id = ",
    )
    .bind(id.to_string())
    .query()
    .fetch_one(conn)
    .await?;
    Ok(ChunkTotals {
        chunks: row.try_get::<i64, _>("chunks")? as u32,
        records: row.try_get::<i64, _>("records")? as u64,
    })
}
