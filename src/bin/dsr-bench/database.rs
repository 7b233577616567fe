//! The fresh database a spawned orchestrator runs on. Every run starts
//! empty, so figures do not depend on what earlier runs left behind (the
//! backlog scenario builds its history on purpose): SQLite gets a new file
//! in a temporary directory, PostgreSQL a new database on the named server,
//! dropped at the end.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor};

use crate::cli::Backend;

/// A database created for this run.
pub struct FreshDatabase {
    /// The URL the orchestrator is given.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    kind: Kind,
}

enum Kind {
    /// The directory holding the SQLite file; removed on drop unless kept.
    Sqlite(Option<tempfile::TempDir>, PathBuf),
    /// The PostgreSQL database's name and the server's admin options.
    Postgres(String, Box<PgConnectOptions>),
}

impl FreshDatabase {
    /// Creates an empty database on the backend `url` names.
    pub async fn create(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let dir = tempfile::Builder::new()
                .prefix("dsr-bench-")
                .tempdir()
                .context("cannot create a temporary directory for the SQLite database")?;
            let path = dir.path().join("dsr.db");
            Ok(Self {
                url: format!("sqlite://{}", path.display()),
                backend: Backend::Sqlite,
                kind: Kind::Sqlite(Some(dir), path),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let admin = PgConnectOptions::from_str(url)
                .context("invalid PostgreSQL URL")?
                .database("postgres");
            let name = format!(
                "dsr_bench_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            let mut admin_conn = connect(&admin).await?;
            admin_conn
                .execute(sqlx::AssertSqlSafe(format!("create database {name}")))
                .await
                .with_context(|| format!("cannot create database {name}"))?;
            let _ = admin_conn.close().await;
            Ok(Self {
                url: with_database(url, &name)?,
                backend: Backend::Postgres,
                kind: Kind::Postgres(name, Box::new(admin)),
            })
        } else {
            bail!("--database-url must start with sqlite:// or postgres://")
        }
    }

    /// Where the data is, for the "kept" notice.
    pub fn location(&self) -> String {
        match &self.kind {
            Kind::Sqlite(_, path) => path.display().to_string(),
            Kind::Postgres(name, _) => format!("PostgreSQL database {name}"),
        }
    }

    /// Removes the database, unless `keep`; then says where it is.
    pub async fn finish(mut self, keep: bool) -> anyhow::Result<()> {
        if keep {
            if let Kind::Sqlite(dir, _) = &mut self.kind
                && let Some(dir) = dir.take()
            {
                let _ = dir.keep();
            }
            eprintln!("dsr-bench: database kept: {}", self.location());
            return Ok(());
        }
        match &self.kind {
            // The TempDir removes itself when dropped.
            Kind::Sqlite(..) => Ok(()),
            Kind::Postgres(name, admin) => {
                let mut admin_conn = connect(admin).await?;
                admin_conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .await
                    .with_context(|| format!("cannot drop database {name}"))?;
                let _ = admin_conn.close().await;
                Ok(())
            }
        }
    }
}

/// One admin connection to the server's `postgres` database.
async fn connect(admin: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let context = "cannot connect to the PostgreSQL server's `postgres` database";
    tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(admin))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 10 s"))
        .context(context)?
        .context(context)
}

/// `url` with its path (the database name) replaced by `name`, keeping the
/// user, host, port and query.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
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
