//! The store's errors, and the one place that decides whether a database
//! failure is transient.
//!
//! A transient failure is one the same call may get past by trying again
//! later: the database could not be reached or ended the connection (a
//! restart, a failover, `terminating connection due to administrator
//! command`), no pooled connection came free in time, the server refused
//! more connections, or a transaction lost a race (serialization failure,
//! deadlock, SQLite's busy lock). Everything else (a constraint the code
//! should have honoured, a corrupt row, a bad URL) is not: retrying it
//! changes nothing. [`StoreError::is_transient`] is what the API maps to
//! `UNAVAILABLE`, what the recorder retries, and what intake reports to
//! every submission of a failed batch.

use std::sync::Arc;

use crate::domain::Violations;

/// Errors of the store, classified for the API layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity does not exist: its kind and id, e.g.
    /// `request 6f1c2b1e-...`.
    #[error("{0} not found")]
    NotFound(String),
    /// A conflicting entity exists (idempotency mismatch, taken id).
    #[error("{0}")]
    AlreadyExists(String),
    /// The entity is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The input refers to things that do not exist or cannot be used.
    #[error("invalid input: {0}")]
    Invalid(Violations),
    /// A row could not be decoded (a bug or manual tampering).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed. Shared so that one failure can be reported to
    /// every caller it affected (a batch of submissions). Shown as one
    /// line: the database's own message, or the connection's failure.
    #[error("database error: {}", describe(.0))]
    Database(Arc<sqlx::Error>),
    /// Another process holds the SQLite file.
    #[error(
        "the SQLite database {0} is in use by another dsr-orchestrator process; \
         SQLite serves one process — use PostgreSQL to run several replicas"
    )]
    InUse(String),
    /// A submission got no answer from the database within the store's
    /// wait: it may or may not have been taken in, and a retry with the
    /// same request id tells which (submissions are idempotent).
    #[error(
        "the database did not answer within {0:?}; the request may or may not have been \
         taken in: retry with the same request_id to learn which"
    )]
    Unanswered(std::time::Duration),
    /// The task that does this work is not running: the server is starting
    /// or shutting down.
    #[error("the server is shutting down")]
    Stopped,
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Sealed personal data that does not open: what it is, and why (the
    /// key it names is missing or wrong).
    #[error("{0}")]
    Sealed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(Arc::new(e))
    }
}

impl StoreError {
    /// `NotFound` for the entity `kind` with id `id`.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        StoreError::NotFound(format!("{kind} {id}"))
    }

    /// Whether trying the same operation again later may succeed (see the
    /// module documentation).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => is_transient(e),
            StoreError::Stopped | StoreError::Unanswered(_) => true,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_transient(e),
            _ => false,
        }
    }

    /// The same error, for another caller affected by the same failure.
    pub fn shared(&self) -> StoreError {
        match self {
            StoreError::NotFound(m) => StoreError::NotFound(m.clone()),
            StoreError::AlreadyExists(m) => StoreError::AlreadyExists(m.clone()),
            StoreError::FailedPrecondition(m) => StoreError::FailedPrecondition(m.clone()),
            StoreError::Invalid(v) => StoreError::Invalid(v.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            StoreError::Database(e) => StoreError::Database(e.clone()),
            StoreError::InUse(m) => StoreError::InUse(m.clone()),
            StoreError::Stopped => StoreError::Stopped,
            StoreError::Unanswered(d) => StoreError::Unanswered(*d),
            StoreError::Migrate(e) => StoreError::Corrupt(format!("migration failed: {e}")),
            StoreError::Sealed(m) => StoreError::Sealed(m.clone()),
        }
    }
}

/// One line for a database failure: sqlx's own text repeats its cause
/// (`error returned from database: X` with X again as its source).
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Configuration(e) => e.to_string(),
        sqlx::Error::Io(e) => format!("cannot reach the database: {e}"),
        sqlx::Error::PoolTimedOut => {
            "no database connection came free within the acquire timeout".to_string()
        }
        other => other.to_string(),
    }
}

/// SQLSTATE codes (PostgreSQL) and result codes (SQLite) of conditions
/// that pass: connection exceptions (class 08), too many connections,
/// the server shutting down or starting (57P01-57P03), serialization
/// failures and deadlocks; SQLite's BUSY (5) and LOCKED (6).
fn transient_code(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "53300" | "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "5" | "6"
        )
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().as_deref().is_some_and(transient_code),
        // The connection broke, could not be made, or none came free.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // sqlx reports a connection that ended between messages as a
        // protocol error ("unexpected end of file" and the like).
        sqlx::Error::Protocol(m) => {
            let m = m.to_ascii_lowercase();
            m.contains("closed") || m.contains("end of file") || m.contains("reset")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_conditions() {
        for code in ["08006", "08001", "57P01", "53300", "40001", "40P01", "5"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "22P02", "19"] {
            assert!(!transient_code(code), "{code}");
        }
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            StoreError::from(sqlx::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into()
            ))
            .is_transient()
        );
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        let shared = StoreError::from(sqlx::Error::PoolClosed).shared();
        assert!(shared.is_transient());
    }
}
