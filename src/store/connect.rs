//! Opening the database: choosing the backend from the URL, tuning each
//! connection, and running the embedded migrations.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::Connection;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use tokio::sync::{Notify, broadcast};

use super::{Store, StoreError};
use crate::seal::Keyring;

/// Page cache of SQLite's writer connection, in KiB. The writer's cache
/// survives between its transactions (no other connection writes), so the
/// upper levels of every index stay in memory; SQLite's default is 2 MiB.
/// 32 MiB keeps a replica with a history of 200,000 requests well under
/// 250 MB resident (`dsr-bench backlog`); a 64 MiB cache held about
/// 25 MiB more, for intake about 5 % faster and a backlog fan-out no
/// faster.
const SQLITE_WRITER_CACHE_KIB: u32 = 32 * 1024;

/// Page cache of each pooled (reading) SQLite connection, in KiB. SQLite
/// empties a connection's cache whenever another connection has written
/// since it last read, so under load a reader starts every transaction
/// cold and its cache serves one transaction at most; SQLite's default
/// of 2 MiB each would only add to the replica's resident memory.
const SQLITE_READER_CACHE_KIB: u32 = 1024;

/// Size the SQLite log file is trimmed back to when it is rewound.
const SQLITE_WAL_LIMIT_BYTES: u64 = 128 * 1024 * 1024;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// PostgreSQL migrations whose comments have been reworded since they
/// were first released, with the checksum (SHA-384, hex) of each earlier
/// text. The migrator refuses a database whose applied migrations do not
/// match the files, so one that applied an earlier text is given the
/// current checksum first: the SQL it ran is the same.
const POSTGRES_REWORDED: &[(i64, &str)] = &[(
    8,
    "abfe4eb6f8c0d4079ede7ab3f3fd83ed8e28009c2ec4b11f5ef5b45af98c0ab7\
     8afa6c299dfb1d0f0db98e7cfc25db3a",
)];

/// Brings the recorded checksums of [`POSTGRES_REWORDED`] migrations up to
/// date, before the migrator checks them.
async fn accept_reworded(pool: &sqlx::AnyPool) -> Result<(), StoreError> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(());
    }
    for (version, earlier) in POSTGRES_REWORDED {
        let Some(current) = POSTGRES_MIGRATIONS.iter().find(|m| m.version == *version) else {
            continue;
        };
        // Our own constants, never input: safe to inline.
        let statement = format!(
            "update _sqlx_migrations set checksum = decode('{}', 'hex') \
             where version = {version} and checksum = decode('{earlier}', 'hex')",
            hex::encode(&current.checksum)
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The two supported databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, one process.
    Sqlite,
    /// Shared by many replicas.
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the lock before failing.
    pub sqlite_busy_timeout: Duration,
    /// SQLite: fsync every commit (`true`, the default: an acknowledged
    /// write survives power loss) or only at checkpoints (`false`: survives
    /// a process crash, may lose the last commits on power loss).
    pub sqlite_sync_every_commit: bool,
    /// The keys that seal personal data at rest; `None`: a key for this
    /// process only (tests, tools that keep nothing).
    pub keys: Option<Arc<Keyring>>,
    /// PostgreSQL: write transactions intake and the recorder each keep
    /// in flight; 0 picks them by the machine's cores (see
    /// [`Store::batch_writers`]). SQLite always has one.
    pub write_transactions: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_sync_every_commit: true,
            keys: None,
            write_transactions: 0,
        }
    }
}

/// The database file of a SQLite URL: `None` for in-memory databases and
/// for PostgreSQL.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    sqlite_path(url)
}

/// The database file named by a SQLite URL, or `None` for in-memory ones.
pub(super) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let in_memory = path.contains(":memory:") || query.split('&').any(|p| p == "mode=memory");
    (!path.is_empty() && !in_memory).then(|| PathBuf::from(path))
}

/// A database URL with its password, if it has one, shown as `***`: for
/// logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme + i);
    let Some(at) = url[scheme..authority_end].rfind('@').map(|i| scheme + i) else {
        return url.to_string();
    };
    match url[scheme..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..scheme], &url[at..]),
        None => url.to_string(),
    }
}

/// SQLite serves one process: a second orchestrator on the same file would
/// run a second dispatcher that SQLite's locking cannot coordinate with the
/// first. An exclusive OS lock on `<file>.lock`, held for the life of the
/// store, refuses it with a clear error instead.
fn sqlite_process_lock(url: &str) -> Result<Option<File>, StoreError> {
    let Some(path) = sqlite_path(url) else {
        return Ok(None);
    };
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::from(sqlx::Error::Io(e)))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse(path.display().to_string())),
        Err(TryLockError::Error(e)) => Err(StoreError::from(sqlx::Error::Io(e))),
    }
}

impl Store {
    /// Connects, tunes and migrates. A SQLite file is created if missing.
    /// Nothing runs in the background yet: whoever owns the store starts
    /// its tasks ([`Store::intake_writer`], [`Store::checkpointer`],
    /// [`Store::notice_publisher`], [`Store::notice_listener`]), as
    /// `startup` does.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = Backend::from_url(url).ok_or_else(|| {
            StoreError::from(sqlx::Error::Configuration(
                "database URL must start with sqlite:, postgres:// or postgresql://".into(),
            ))
        })?;
        // Intake's and the recorder's writers each hold a connection while
        // they write; claims need two more (on PostgreSQL a claim's leases
        // and the history of the claim before it, see `claim_steps`; the
        // histories of several claims may wait at once, and take more),
        // and reads one.
        let needed = 2 * options.write_transactions + 3;
        if backend == Backend::Postgres
            && options.write_transactions > 0
            && (options.max_connections as usize) < needed
        {
            return Err(StoreError::from(sqlx::Error::Configuration(
                format!(
                    "--write-transactions {} needs --db-max-connections of at least {needed}: \
                     intake and the recorder each hold that many connections while they \
                     write, claims need two more and reads one",
                    options.write_transactions
                )
                .into(),
            )));
        }
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let process_lock = match backend {
            Backend::Sqlite => sqlite_process_lock(&url)?,
            Backend::Postgres => None,
        };
        let busy_ms = options.sqlite_busy_timeout.as_millis();
        let synchronous = if options.sqlite_sync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        };
        // WAL lets readers run beside the one writer; FULL sync makes every
        // acknowledged write survive power loss, not only a process crash.
        // No connection checkpoints in its commits: the checkpointer does
        // (see `checkpoint`), and whoever rewinds the log trims its file.
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms}; \
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = {SQLITE_WAL_LIMIT_BYTES}; \
             PRAGMA cache_size = -{SQLITE_READER_CACHE_KIB};"
        );
        let writer_pragmas = format!("{pragmas} PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB};");
        if backend == Backend::Postgres {
            // One connection first, outside the pool: the pool retries a
            // failed connect until its acquire timeout and then reports
            // only that it timed out, hiding the cause (connection
            // refused, a missing database, a wrong password).
            match tokio::time::timeout(options.acquire_timeout, AnyConnection::connect(&url)).await
            {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    return Err(StoreError::from(sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", options.acquire_timeout),
                    ))));
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas))
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        // The pool connects lazily beyond its first connection; ask for one
        // now so a wrong URL or an unreachable server fails startup.
        pool.acquire().await?;
        match backend {
            Backend::Sqlite => {
                SQLITE_MIGRATIONS.run(&pool).await?;
                super::sqlite_build::warn_of_missing_flags(&pool).await?;
            }
            Backend::Postgres => {
                accept_reworded(&pool).await?;
                POSTGRES_MIGRATIONS.run(&pool).await?
            }
        }
        let sqlite_writer = match backend {
            Backend::Sqlite => {
                let mut conn = AnyConnection::connect(&url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(writer_pragmas))
                    .execute(&mut conn)
                    .await?;
                Some(Arc::new(super::SqliteTurns {
                    conn: Arc::new(tokio::sync::Mutex::new(Some(super::SqliteWriter {
                        conn,
                        open: false,
                    }))),
                    others: Arc::default(),
                }))
            }
            Backend::Postgres => None,
        };
        let (events, _) = broadcast::channel(4096);
        Ok(Store {
            pool,
            backend,
            url: url.into(),
            process_lock: process_lock.map(|f| Arc::new(std::sync::Mutex::new(Some(f)))),
            work: Arc::new(Notify::new()),
            events,
            observer: Arc::default(),
            sqlite_writer,
            intake: Arc::default(),
            publisher: Arc::default(),
            submitting: Default::default(),
            wait: options.acquire_timeout,
            writers: match (backend, options.write_transactions) {
                (Backend::Sqlite, _) => 1,
                // One per four cores, within what the pool leaves them.
                (Backend::Postgres, 0) => std::thread::available_parallelism()
                    .map_or(1, |n| n.get() / 4)
                    .clamp(1, 4)
                    .min((options.max_connections as usize).saturating_sub(3) / 2)
                    .max(1),
                (Backend::Postgres, n) => n,
            },
            keys: options
                .keys
                .clone()
                .unwrap_or_else(|| Arc::new(Keyring::ephemeral())),
        })
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
