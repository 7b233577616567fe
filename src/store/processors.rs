//! The processor registry. A processor's validated spec is kept as one JSON
//! document (read whole, never queried by field); its callback token only as
//! a SHA-256 hash, so a database leak does not let anyone speak for a
//! processor. A webhook processor's signing secret must be read back to
//! sign with, so it cannot be hashed: it is sealed like personal data,
//! bound to its processor's row, and only ever shown when it is issued.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{from_json, json, micros, time};
use super::sealed::WEBHOOK_SECRET;
use super::sql::{Bind, Sql};
use super::{Store, StoreError};
use crate::domain::{
    Actor, AdapterConfig, Processor, ProcessorId, ProcessorSpec, ProcessorStatus, Timestamp,
};

/// A freshly minted callback token: shown once, stored as a hash.
pub fn new_callback_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "dsrcb_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A freshly minted webhook signing secret, as Standard Webhooks spells
/// them: `whsec_` and the base64 of 32 random bytes.
pub fn new_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// What registering a processor hands out, once.
pub struct Registered {
    /// The processor as stored.
    pub processor: Processor,
    /// Its callback token.
    pub callback_token: String,
    /// Its webhook signing secret, for a webhook processor.
    pub webhook_secret: Option<String>,
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn decode(row: &AnyRow) -> Result<Processor, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Processor {
        spec: from_json::<ProcessorSpec>(row, "spec")?,
        status: if status == "ACTIVE" {
            ProcessorStatus::Active
        } else {
            ProcessorStatus::Disabled
        },
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        updated_by: row
            .try_get::<Option<String>, _>("updated_by")?
            .map(|a| Actor::parse(&a).map_err(|e| StoreError::Corrupt(format!("updated_by: {e}"))))
            .transpose()?,
    })
}

const COLUMNS: &str = "spec, status, created_at, updated_at, updated_by";

/// The insert of processors, their rows ([`row`]) to follow.
const INSERT: &str = "insert into processors (id, display_name, role, country, spec, \
     adapter_kind, status, token_hash, created_at, updated_at, updated_by, webhook_secret) values ";

/// A new processor's row for [`INSERT`]: active, with `token` (stored as
/// its hash) and its webhook secret `sealed`, if any.
fn row(
    spec: &ProcessorSpec,
    token: &str,
    sealed: Option<String>,
    actor: &Actor,
    now: Timestamp,
) -> Vec<Bind> {
    vec![
        Bind::from(spec.id.as_str()),
        Bind::from(spec.display_name.as_str()),
        Bind::from(spec.role.as_str()),
        Bind::from(spec.country.as_str()),
        Bind::from(json(spec)),
        Bind::from(spec.adapter.kind()),
        Bind::from("ACTIVE"),
        Bind::from(token_hash(token)),
        Bind::from(micros(now)),
        Bind::from(micros(now)),
        Bind::from(actor.to_string()),
        Bind::from(sealed),
    ]
}

impl Store {
    /// Registers a new processor; returns it with its one-time token (and
    /// webhook secret).
    pub async fn register_processor(
        &self,
        spec: &ProcessorSpec,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Registered, StoreError> {
        self.insert_processor(spec, actor, now, true).await
    }

    /// Inserts a new processor with a fresh token, and a webhook secret
    /// when `issue_secret` (a secret nobody will see is worse than none:
    /// deliveries would go out signed, and fail at the processor).
    async fn insert_processor(
        &self,
        spec: &ProcessorSpec,
        actor: &Actor,
        now: Timestamp,
        issue_secret: bool,
    ) -> Result<Registered, StoreError> {
        let token = new_callback_token();
        let secret = (issue_secret && matches!(spec.adapter, AdapterConfig::Webhook { .. }))
            .then(new_webhook_secret);
        let sealed = secret
            .as_ref()
            .map(|s| self.seal_json(s, WEBHOOK_SECRET, &spec.id));
        let mut sql = Sql::new(self.backend, INSERT);
        sql.rows([row(spec, &token, sealed, actor, now)])
            .push(" on conflict (id) do nothing");
        let result = sql.query().execute(&self.pool).await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "processor {} is already registered",
                spec.id
            )));
        }
        Ok(Registered {
            processor: self.processor(&spec.id).await?,
            callback_token: token,
            webhook_secret: secret,
        })
    }

    /// Inserts or updates the processors the processors file declares (no
    /// id twice), in one statement: all of them, or on a failure none. An
    /// existing processor keeps its token, webhook secret and status (a
    /// file reload does not re-enable what an operator disabled); a new one
    /// gets a token nobody has seen and no webhook secret: obtain them with
    /// `RotateCallbackToken` and `RotateWebhookSecret`.
    pub async fn upsert_processors(
        &self,
        specs: &[ProcessorSpec],
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if specs.is_empty() {
            return Ok(());
        }
        // By id: two replicas starting at once lock the rows in one order.
        let mut sorted: Vec<&ProcessorSpec> = specs.iter().collect();
        sorted.sort_by_key(|spec| spec.id.as_str());
        let rows = sorted
            .into_iter()
            .map(|spec| row(spec, &new_callback_token(), None, actor, now));
        let mut sql = Sql::new(self.backend, INSERT);
        sql.rows(rows).push(
            " on conflict (id) do update set display_name = excluded.display_name, \
             role = excluded.role, country = excluded.country, spec = excluded.spec, \
             adapter_kind = excluded.adapter_kind, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
        );
        sql.query().execute(&self.pool).await?;
        Ok(())
    }

    /// One processor.
    pub async fn processor(&self, id: &ProcessorId) -> Result<Processor, StoreError> {
        let row = Sql::new(
            self.backend,
            format!("select {COLUMNS} from processors where id = "),
        )
        .bind(id.as_str())
        .query()
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("processor", id))?;
        decode(&row)
    }

    /// Up to `limit` processors with ids after `after`, by id.
    pub async fn list_processors(
        &self,
        after: Option<&ProcessorId>,
        limit: u32,
    ) -> Result<Vec<Processor>, StoreError> {
        let mut sql = Sql::new(self.backend, format!("select {COLUMNS} from processors"));
        if let Some(after) = after {
            sql.push(" where id > ").bind(after.as_str());
        }
        sql.push(" order by id").limit(i64::from(limit));
        sql.query()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Every processor (the registry is small: tens, not thousands).
    pub async fn all_processors(&self) -> Result<Vec<Processor>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from processors order by id"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(decode)
        .collect()
    }

    /// Replaces a processor's spec.
    pub async fn update_processor(
        &self,
        spec: &ProcessorSpec,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Processor, StoreError> {
        match self.update_processor_from(None, spec, actor, now).await? {
            Some(p) => Ok(p),
            None => Err(StoreError::not_found("processor", &spec.id)),
        }
    }

    /// Replaces a processor's settings with `spec` only if it is still as
    /// last written at `read` (its `updated_at`; `None`: whatever it is):
    /// `None` when it changed since (read it again and merge again), so
    /// that two updates of different fields do not undo each other.
    pub async fn update_processor_from(
        &self,
        read: Option<Timestamp>,
        spec: &ProcessorSpec,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Option<Processor>, StoreError> {
        let mut sql = Sql::new(self.backend, "update processors set display_name = ");
        sql.bind(spec.display_name.as_str())
            .push(", role = ")
            .bind(spec.role.as_str())
            .push(", country = ")
            .bind(spec.country.as_str())
            .push(", spec = ")
            .bind(json(spec))
            .push(", adapter_kind = ")
            .bind(spec.adapter.kind())
            .push(", updated_at = ")
            .bind(micros(now))
            .push(", updated_by = ")
            .bind(actor.to_string())
            .push(" where id = ")
            .bind(spec.id.as_str());
        if let Some(read) = read {
            sql.push(" and updated_at = ").bind(micros(read));
        }
        let result = sql.query().execute(&self.pool).await?;
        if result.rows_affected() == 0 {
            // Missing is NOT_FOUND; changed since, a retry.
            self.processor(&spec.id).await?;
            return Ok(None);
        }
        self.processor(&spec.id).await.map(Some)
    }

    /// Stops new instructions to a processor.
    pub async fn disable_processor(
        &self,
        id: &ProcessorId,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Processor, StoreError> {
        let result = Sql::new(
            self.backend,
            "update processors set status = 'DISABLED', updated_at = ",
        )
        .bind(micros(now))
        .push(", updated_by = ")
        .bind(actor.to_string())
        .push(" where id = ")
        .bind(id.as_str())
        .query()
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::not_found("processor", id));
        }
        self.processor(id).await
    }

    /// Replaces a processor's token; returns the new one.
    pub async fn rotate_token(
        &self,
        id: &ProcessorId,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        let token = new_callback_token();
        self.set_credential(id, "token_hash", token_hash(&token), actor, now)
            .await?;
        Ok(token)
    }

    /// Replaces one credential column of a processor (`token_hash`,
    /// `webhook_secret`), attributed to `actor`.
    async fn set_credential(
        &self,
        id: &ProcessorId,
        column: &str,
        value: String,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let result = Sql::new(self.backend, format!("update processors set {column} = "))
            .bind(value)
            .push(", updated_at = ")
            .bind(micros(now))
            .push(", updated_by = ")
            .bind(actor.to_string())
            .push(" where id = ")
            .bind(id.as_str())
            .query()
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::not_found("processor", id));
        }
        Ok(())
    }

    /// Issues a new webhook signing secret for a webhook processor; returns
    /// it. `FailedPrecondition` for another kind of processor.
    pub async fn rotate_webhook_secret(
        &self,
        id: &ProcessorId,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<String, StoreError> {
        let processor = self.processor(id).await?;
        if !matches!(processor.spec.adapter, AdapterConfig::Webhook { .. }) {
            return Err(StoreError::FailedPrecondition(format!(
                "processor {id} does not use the webhook adapter"
            )));
        }
        let secret = new_webhook_secret();
        let sealed = self.seal_json(&secret, WEBHOOK_SECRET, id);
        self.set_credential(id, "webhook_secret", sealed, actor, now)
            .await?;
        Ok(secret)
    }

    /// A webhook processor's signing secret (`whsec_...`), if one was
    /// issued; an error naming the key when it cannot be opened.
    pub async fn webhook_secret(&self, id: &ProcessorId) -> Result<Option<String>, StoreError> {
        let row = Sql::new(
            self.backend,
            "select webhook_secret from processors where id = ",
        )
        .bind(id.as_str())
        .query()
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found("processor", id))?;
        row.try_get::<Option<String>, _>("webhook_secret")?
            .map(|sealed| self.open_json::<String>(&sealed, WEBHOOK_SECRET, id))
            .transpose()
    }

    /// The processor a callback token belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<ProcessorId>, StoreError> {
        let row = Sql::new(
            self.backend,
            "select id from processors where token_hash = ",
        )
        .bind(token_hash(token))
        .query()
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let id: String = r.try_get("id")?;
            ProcessorId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .transpose()
    }
}
