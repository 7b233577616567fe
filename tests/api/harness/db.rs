//! Throwaway databases: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database (a [`ScratchDatabase`]) dropped after the test.

use dsr_orchestrator::store::ScratchDatabase;
use dsr_orchestrator::store::scratch::test_server_url;
use sqlx::postgres::PgPoolOptions;

/// A database for one test.
pub struct TestDb {
    /// URL the orchestrator connects to.
    pub url: String,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database, dropped with this value.
    postgres: Option<ScratchDatabase>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/dsr.db", dir.path().display());
        Self {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh database on the tests' PostgreSQL server (the runner checked
    /// that it answers before running any PostgreSQL test).
    pub async fn postgres() -> Self {
        let db = ScratchDatabase::create(&test_server_url(), "dsr_test")
            .await
            .expect("create a PostgreSQL test database");
        Self {
            url: db.url.clone(),
            _dir: None,
            postgres: Some(db),
        }
    }

    /// A fresh database of the same backend as `other` (for a second,
    /// separate orchestrator).
    pub async fn like(other: &TestDb) -> Self {
        if other.postgres.is_some() {
            Self::postgres().await
        } else {
            Self::sqlite().await
        }
    }

    /// A database that exists already at `url` (on a test's own server),
    /// left in place afterwards.
    pub fn existing(url: String) -> Self {
        Self {
            url,
            _dir: None,
            postgres: None,
        }
    }

    /// The name of the PostgreSQL database, if this is one.
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(ScratchDatabase::name)
    }

    /// Runs `statements` (one or several, `;`-separated) on this database
    /// over a connection of its own, beside whatever server uses it.
    pub async fn execute(&self, statements: &str) {
        self.try_execute(statements).await.unwrap();
    }

    /// [`TestDb::execute`], answering whether the database took the
    /// statements.
    pub async fn try_execute(&self, statements: &str) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let statements = sqlx::AssertSqlSafe(statements.to_string());
        if self.url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&self.url).await?;
            let done = sqlx::raw_sql(statements).execute(&mut conn).await;
            conn.close().await?;
            done.map(|_| ())
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            // As on every connection of the store's.
            sqlx::raw_sql("PRAGMA foreign_keys = ON")
                .execute(&mut conn)
                .await?;
            let done = sqlx::raw_sql(statements).execute(&mut conn).await;
            conn.close().await?;
            done.map(|_| ())
        }
    }

    /// The values of a query's text columns, row by row (`None` for
    /// null), read over a connection of its own.
    pub async fn texts(&self, query: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::{Connection, Row};
        let query = sqlx::AssertSqlSafe(query.to_string());
        if self.url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let rows = sqlx::query(query).fetch_all(&mut conn).await.unwrap();
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.try_get(i).unwrap()).collect())
                .collect()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            let rows = sqlx::query(query).fetch_all(&mut conn).await.unwrap();
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.try_get(i).unwrap()).collect())
                .collect()
        }
    }

    /// Waits (up to ten seconds) until some session of this PostgreSQL
    /// database waits for a lock and `condition` holds of it (an SQL
    /// predicate on `pg_stat_activity`'s columns with `$1` bound to
    /// `value`); whether one did.
    pub async fn until_waiting(&self, condition: &str, value: &str) -> bool {
        use sqlx::Connection;
        let mut watcher = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let query = format!(
            "select count(*) from pg_stat_activity where datname = current_database() \
             and wait_event_type = 'Lock' and {condition}"
        );
        for _ in 0..1000 {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.clone()))
                .bind(value)
                .fetch_one(&mut watcher)
                .await
                .unwrap();
            if n > 0 {
                return true;
            }
            // Polling another process's locks: nothing to await instead.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    /// A connection of its own with a transaction open, to hold locks the
    /// server's transactions then wait for, and its backend's pid.
    pub async fn open_transaction(&self) -> (sqlx::PgConnection, i32) {
        use sqlx::Connection;
        let mut holder = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql("begin").execute(&mut holder).await.unwrap();
        let pid = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut holder)
            .await
            .unwrap();
        (holder, pid)
    }

    /// [`TestDb::open_transaction`] holding the row lock of request `id`,
    /// which the server's writes to that request then wait for.
    pub async fn hold_request(&self, id: &str) -> (sqlx::PgConnection, i32) {
        let (mut holder, pid) = self.open_transaction().await;
        sqlx::query("select id from requests where id = $1 for update")
            .bind(id)
            .execute(&mut holder)
            .await
            .unwrap();
        (holder, pid)
    }

    /// Whether a session comes to wait for a lock the backend `pid` holds.
    pub async fn someone_waits_for(&self, pid: i32) -> bool {
        self.until_waiting(
            "cast($1 as int) = any(pg_blocking_pids(pid))",
            &pid.to_string(),
        )
        .await
    }

    /// A connection pool for the PostgreSQL server's administrative
    /// database (to stop and start connections to this one).
    pub async fn admin_pool() -> sqlx::PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .connect(&test_server_url())
            .await
            .expect("admin connection")
    }
}
