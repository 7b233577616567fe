//! Resealing: every sealed value (personal data, the chunks of data
//! records uploaded for access requests, and webhook processors'
//! signing secrets) under the active key, and nothing left
//! from before sealing existed. One pass walks each column of personal
//! data in id order, in batches of one transaction each, and seals again
//! every value not sealed with the active key (values written as JSON
//! before sealing existed, too); it keys the idempotency fingerprints not
//! yet keyed, and moves data records still inside results into their
//! sealed column. It runs while the service runs: each value is replaced
//! only if it is still what was read (an erasure in between wins), so a
//! pass can stop anywhere and the next one goes on from what is left.
//! Values that do not open are left as they are and counted by the key
//! they name.

use std::collections::BTreeMap;

use sqlx::Row;

use super::opened::{CHUNK, ResultData, chunk_row};
use super::sealed::{PAYLOAD, RECORDS, SUBJECT, WEBHOOK_SECRET};
use super::sql::{Bind, Col, Sql};
use super::{Store, StoreError};
use crate::domain::{DataRecord, InstructionResult, Subject, SubjectIdentity};
use crate::seal::Keyring;

/// Most chunks of data records resealed in one transaction.
const CHUNKS_PER_TX: u32 = 8;

/// What a resealing pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Values sealed (again) under the active key.
    pub values: u64,
    /// Fingerprints keyed.
    pub fingerprints: u64,
    /// Values that do not open, by the key they name.
    pub unreadable: BTreeMap<String, u64>,
}

/// A column of sealed values: its table, column, row key, and what its
/// JSON holds.
#[derive(Clone, Copy)]
enum Column {
    Subject,
    Payload,
    Records,
    WebhookSecret,
}

impl Column {
    fn table(self) -> &'static str {
        match self {
            Column::Subject => "requests",
            Column::Payload | Column::Records => "instructions",
            Column::WebhookSecret => "processors",
        }
    }
    fn column(self) -> &'static str {
        match self {
            Column::Subject => "subject",
            Column::Payload => "payload",
            Column::Records => "sealed_records",
            Column::WebhookSecret => "webhook_secret",
        }
    }
    fn bound(self) -> &'static str {
        match self {
            Column::Subject => SUBJECT,
            Column::Payload => PAYLOAD,
            Column::Records => RECORDS,
            Column::WebhookSecret => WEBHOOK_SECRET,
        }
    }
}

impl Store {
    /// One resealing pass, `batch` rows per transaction. Each
    /// transaction's work is told to the observer once it is committed, so
    /// a pass cut short (an error, a caller gone) is counted as far as it
    /// went.
    pub async fn reseal(&self, batch: u32) -> Result<Resealed, StoreError> {
        let mut done = Resealed::default();
        for column in [
            Column::Subject,
            Column::Payload,
            Column::Records,
            Column::WebhookSecret,
        ] {
            self.reseal_column(column, batch, &mut done).await?;
        }
        self.reseal_chunks(batch, &mut done).await?;
        self.move_records_out(batch, &mut done).await?;
        self.key_fingerprints(batch, &mut done).await?;
        Ok(done)
    }

    /// Adds what one committed transaction did to `done`, and tells the
    /// observer.
    fn committed(&self, done: &mut Resealed, values: u64, fingerprints: u64) {
        done.values += values;
        done.fingerprints += fingerprints;
        if let Some(observer) = self.observer.get()
            && values + fingerprints > 0
        {
            observer.resealed(values, fingerprints);
        }
    }

    /// Reseals the chunks of data records uploaded for access requests
    /// (keyed by instruction and index, each bound to both), at most
    /// [`CHUNKS_PER_TX`] per transaction: a chunk holds up to 1,000
    /// records.
    async fn reseal_chunks(&self, batch: u32, done: &mut Resealed) -> Result<(), StoreError> {
        let current = format!("v1:{}:", self.keys.active());
        let mut after = (String::new(), -1i64);
        loop {
            let rows = Sql::new(
                self.backend,
                format!(
                    "select instruction_id, chunk, sealed from data_record_chunks \
                     where substr(sealed, 1, {}) <> ",
                    current.len()
                ),
            )
            .bind(current.clone())
            .push(" and (instruction_id, chunk) > (")
            .bind(after.0.clone())
            .push(", ")
            .bind(after.1)
            .push(") order by instruction_id, chunk")
            .limit(i64::from(batch.min(CHUNKS_PER_TX)))
            .query()
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = (last.try_get("instruction_id")?, last.try_get("chunk")?);
            // Opened and sealed again before the transaction, which then
            // only writes (on SQLite it holds the one writer).
            let mut updates = Vec::with_capacity(rows.len());
            for row in &rows {
                let (id, index): (String, i64) =
                    (row.try_get("instruction_id")?, row.try_get("chunk")?);
                let old: String = row.try_get("sealed")?;
                let bound_to = chunk_row(&id, index);
                match self.open_json::<Vec<DataRecord>>(&old, CHUNK, &bound_to) {
                    Ok(records) => {
                        let new = self.seal_json(&records, CHUNK, &bound_to);
                        updates.push((id, index, old, new));
                    }
                    Err(StoreError::Sealed(_) | StoreError::Corrupt(_)) => {
                        let key = Keyring::key_of(&old).unwrap_or("unreadable");
                        *done.unreadable.entry(key.to_string()).or_default() += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            if updates.is_empty() {
                continue;
            }
            let mut tx = self.begin().await?;
            let mut resealed = 0;
            for (id, index, old, new) in updates {
                resealed += Sql::new(self.backend, "update data_record_chunks set sealed = ")
                    .bind(new)
                    .push(" where instruction_id = ")
                    .bind(id)
                    .push(" and chunk = ")
                    .bind(index)
                    .push(" and sealed = ")
                    .bind(old)
                    .query()
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            self.committed(done, resealed, 0);
        }
    }

    async fn reseal_column(
        &self,
        column: Column,
        batch: u32,
        done: &mut Resealed,
    ) -> Result<(), StoreError> {
        // Compared as text, not with LIKE: a key id may hold `_`.
        let current = format!("v1:{}:", self.keys.active());
        let mut after = String::new();
        loop {
            let rows = Sql::new(
                self.backend,
                format!(
                    "select id, {c} as value from {t} where {c} is not null \
                     and substr({c}, 1, {n}) <> ",
                    c = column.column(),
                    t = column.table(),
                    n = current.len()
                ),
            )
            .bind(current.clone())
            .push(" and id > ")
            .bind(after.clone())
            .push(" order by id")
            .limit(i64::from(batch))
            .query()
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("id")?;
            let mut updates = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id")?;
                let old: String = row.try_get("value")?;
                let sealed = match column {
                    Column::Subject => self
                        .open_json::<Subject>(&old, column.bound(), &id)
                        .map(|v| self.seal_json(&v, column.bound(), &id)),
                    Column::Payload => self
                        .open_json::<Vec<SubjectIdentity>>(&old, column.bound(), &id)
                        .map(|v| self.seal_json(&v, column.bound(), &id)),
                    Column::Records => self
                        .open_json::<ResultData>(&old, column.bound(), &id)
                        .map(|v| self.seal_json(&v, column.bound(), &id)),
                    Column::WebhookSecret => self
                        .open_json::<String>(&old, column.bound(), &id)
                        .map(|v| self.seal_json(&v, column.bound(), &id)),
                };
                match sealed {
                    Ok(new) => updates.push((id, old, new)),
                    Err(StoreError::Sealed(_) | StoreError::Corrupt(_)) => {
                        let key = Keyring::key_of(&old).unwrap_or("unreadable");
                        *done.unreadable.entry(key.to_string()).or_default() += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            let resealed = self
                .replace_values(column.table(), column.column(), &updates)
                .await?;
            self.committed(done, resealed, 0);
        }
    }

    /// Moves data records still inside results (written before records
    /// were kept apart) into their sealed column.
    async fn move_records_out(&self, batch: u32, done: &mut Resealed) -> Result<(), StoreError> {
        let mut after = String::new();
        loop {
            let rows = Sql::new(
                self.backend,
                "select id, result from instructions where result like '%\"records\":[{%' and id > ",
            )
            .bind(after.clone())
            .push(" order by id")
            .limit(i64::from(batch))
            .query()
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("id")?;
            let mut tx = self.begin().await?;
            let mut moved = 0;
            for row in &rows {
                let id: String = row.try_get("id")?;
                let old: String = row.try_get("result")?;
                let result: InstructionResult = serde_json::from_str(&old).map_err(|e| {
                    StoreError::Corrupt(format!("instructions.result of {id}: {e}"))
                })?;
                let (result, records) = result.split_records();
                moved += Sql::new(self.backend, "update instructions set result = ")
                    .bind(serde_json::to_string(&result).expect("a result serialises"))
                    .push(", sealed_records = ")
                    .bind(self.seal_json(&records, RECORDS, &id))
                    .push(", data_records = ")
                    .bind(records.len() as i64)
                    .push(" where id = ")
                    .bind(id)
                    .push(" and result = ")
                    .bind(old)
                    .query()
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            self.committed(done, moved, 0);
        }
    }

    /// Keys the idempotency fingerprints written before they were keyed.
    async fn key_fingerprints(&self, batch: u32, done: &mut Resealed) -> Result<(), StoreError> {
        let mut after = String::new();
        loop {
            let rows = Sql::new(
                self.backend,
                "select id, fingerprint as value from requests where fingerprint not like 'h:%' \
                 and id > ",
            )
            .bind(after.clone())
            .push(" order by id")
            .limit(i64::from(batch))
            .query()
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("id")?;
            let updates = rows
                .iter()
                .map(|row| {
                    let old: String = row.try_get("value")?;
                    let new = self.keyed_fingerprint(&old);
                    Ok((row.try_get("id")?, old, new))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let keyed = self
                .replace_values("requests", "fingerprint", &updates)
                .await?;
            self.committed(done, 0, keyed);
        }
    }

    /// Replaces each row's `column` by its new value where it still holds
    /// the old one; returns how many were replaced.
    async fn replace_values(
        &self,
        table: &str,
        column: &str,
        updates: &[(String, String, String)],
    ) -> Result<u64, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        // In the order of their ids, as every transaction locks rows (see
        // `super::transition`): the update alone would lock them in the
        // order it finds them.
        let ids = updates.iter().map(|(id, _, _)| id.clone()).collect();
        super::aftermath::lock_rows(&mut tx, self.backend, table, ids).await?;
        let mut sql = Sql::new(self.backend, "with v as (");
        sql.select_rows(
            &[("id", Col::Text), ("old", Col::Text), ("new", Col::Text)],
            updates.iter().map(|(id, old, new)| {
                vec![
                    Bind::from(id.clone()),
                    Bind::from(old.clone()),
                    Bind::from(new.clone()),
                ]
            }),
        );
        sql.push(&format!(
            ") update {table} set {column} = v.new from v where {table}.id = v.id \
             and {table}.{column} = v.old and "
        ))
        .in_cte(&format!("{table}.id"), "v", "id");
        let replaced = sql.query().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(replaced)
    }
}
