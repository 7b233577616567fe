//! Throwaway databases: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database created for the test and dropped afterwards.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

/// Where the admin connection for throwaway PostgreSQL databases points.
/// Override with `DSR_TEST_POSTGRES_URL` (a URL of a database we may use to
/// `CREATE DATABASE`).
fn admin_url() -> String {
    std::env::var("DSR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// A database for one test.
pub struct TestDb {
    /// URL the orchestrator connects to.
    pub url: String,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    /// Name of the PostgreSQL database to drop.
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/dsr.db", dir.path().display());
        Self {
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a notice) when no
    /// server is reachable. With `DSR_REQUIRE_POSTGRES=1` (as in CI), an
    /// unreachable server fails the test instead.
    pub async fn postgres() -> Option<Self> {
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect(&admin_url())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                if std::env::var("DSR_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("PostgreSQL is required (DSR_REQUIRE_POSTGRES=1) but unreachable: {e}");
                }
                if !WARNED.swap(true, Ordering::Relaxed) {
                    // Written to the real stderr, not through `eprintln!`,
                    // which the test harness would capture and hide.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "NOTE: PostgreSQL at {} unreachable ({e}); the PostgreSQL half of the suite is SKIPPED \
                         (each *::postgres test passes without running)",
                        admin_url()
                    );
                }
                return None;
            }
        };
        let name = format!("dsr_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("create database {name}")))
            .await
            .expect("create test database");
        admin.close().await;
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
            _ => format!("{base}/{name}"),
        };
        Some(Self {
            url,
            _dir: None,
            pg_name: Some(name),
        })
    }

    /// The name of the throwaway PostgreSQL database, if this is one.
    pub fn postgres_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// Runs `statements` (one or several, `;`-separated) on this database
    /// over a connection of its own, beside whatever server uses it.
    pub async fn execute(&self, statements: &str) {
        use sqlx::Connection;
        let statements = sqlx::AssertSqlSafe(statements.to_string());
        if self.pg_name.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(statements).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(statements).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }

    /// A connection pool for the server's administrative database.
    pub async fn admin_pool() -> sqlx::PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url())
            .await
            .expect("admin connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot await, and the
            // test's runtime may already be shutting down.
            let admin = admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let pool = PgPoolOptions::new()
                        .max_connections(1)
                        .connect(&admin)
                        .await
                        .ok()?;
                    pool.execute(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}
