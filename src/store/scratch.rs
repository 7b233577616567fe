//! Throwaway PostgreSQL databases: created empty on a server for one test
//! or one benchmark run, and dropped after it, so nothing depends on what
//! an earlier run left behind. The store's own tests, the integration
//! suite and `dsr-bench` all make theirs here.
//!
//! Tests find their server through `DSR_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`: any database on the
//! server that a role allowed to `CREATE DATABASE` can connect to).
//! [`ScratchDatabase::for_tests`] answers `None` when the server cannot be
//! reached, so the PostgreSQL half of a suite can be reported as skipped,
//! unless `DSR_REQUIRE_POSTGRES=1` (as CI sets) makes that a failure.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

/// How long the admin connection may take before the server counts as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The server tests create their databases on: `DSR_TEST_POSTGRES_URL`,
/// or the local one.
pub fn test_server_url() -> String {
    std::env::var("DSR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether an unreachable test server must fail the tests
/// (`DSR_REQUIRE_POSTGRES=1`) rather than skip them.
pub fn postgres_required() -> bool {
    std::env::var("DSR_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// An empty database made for one run; dropped when this value is (or
/// earlier with [`ScratchDatabase::drop_now`]), unless kept.
pub struct ScratchDatabase {
    /// The URL of the new database (the server's URL with its name).
    pub url: String,
    name: String,
    admin: PgConnectOptions,
    /// Dropped or kept already: nothing left to do on drop.
    done: bool,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on the server `server_url` names (its
    /// user, host, port and options are kept; the admin connection goes to
    /// the server's `postgres` database).
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let admin = PgConnectOptions::from_str(server_url)
            .context("invalid PostgreSQL URL")?
            .database("postgres");
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut conn = connect(&admin).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("create database {name}")))
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let _ = conn.close().await;
        Ok(Self {
            url: with_database(server_url, &name)?,
            name,
            admin,
            done: false,
        })
    }

    /// A database on the tests' server ([`test_server_url`]), or `None`
    /// when the server is unreachable and not [`postgres_required`]
    /// (then it panics, naming the cause).
    pub async fn for_tests(prefix: &str) -> Option<Self> {
        match Self::create(&test_server_url(), prefix).await {
            Ok(db) => Some(db),
            Err(e) if postgres_required() => {
                panic!("PostgreSQL is required (DSR_REQUIRE_POSTGRES=1) but unusable: {e:#}")
            }
            Err(_) => None,
        }
    }

    /// Whether the tests' server answers (for deciding up front what to
    /// skip); panics with the cause when it does not and is
    /// [`postgres_required`].
    pub async fn test_server_reachable() -> bool {
        let result = async {
            let admin = PgConnectOptions::from_str(&test_server_url())?.database("postgres");
            let conn = connect(&admin).await?;
            let _ = conn.close().await;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => true,
            Err(e) if postgres_required() => {
                panic!("PostgreSQL is required (DSR_REQUIRE_POSTGRES=1) but unreachable: {e:#}")
            }
            Err(_) => false,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the database in place (for a look after a benchmark run).
    pub fn keep(mut self) {
        self.done = true;
    }

    /// Drops the database now, ending any connection still open to it.
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.done = true;
        drop_database(&self.admin, &self.name).await
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Best effort, on a thread of its own: Drop cannot await, and the
        // runtime that made the database may be shutting down.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_database(&admin, &name)).ok()
        })
        .join();
    }
}

async fn drop_database(admin: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = connect(admin).await?;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .await
    .with_context(|| format!("cannot drop database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// One admin connection, within [`CONNECT_TIMEOUT`].
async fn connect(admin: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let context = "cannot connect to the PostgreSQL server's `postgres` database";
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(admin))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {CONNECT_TIMEOUT:?}"))
        .context(context)?
        .context(context)
}

/// `url` with its path (the database name) replaced by `name`, keeping the
/// user, host, port and query.
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        bail!("invalid PostgreSQL URL");
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|i| &rest[authority_end + i..])
        .unwrap_or("");
    Ok(format!(
        "{}{}/{name}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    ))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/db",
            ),
            (
                "postgres://u:p@host/x?sslmode=disable",
                "postgres://u:p@host/db?sslmode=disable",
            ),
            ("postgresql://host", "postgresql://host/db"),
            (
                "postgres://host?sslmode=disable",
                "postgres://host/db?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "db").unwrap(), expected, "{url}");
        }
    }
}
