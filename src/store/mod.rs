//! The store: every piece of orchestration state, in SQL, behind one type.
//!
//! There is no in-memory queue: requests, instructions, leases, retry times,
//! the event history and the completion records all live in the database,
//! so a crash at any line loses nothing — the next process (or another
//! replica) picks up from the rows. Every multi-row change is one
//! transaction.
//!
//! One SQL dialect serves both backends through sqlx's `Any` driver:
//! SQLite (embedded, the default) and PostgreSQL (production). Timestamps are
//! integer microseconds, enums upper-case text, documents JSON text — types
//! both databases share — and the few dialect differences (placeholders,
//! row locking, SQLite's single writer) are chosen by [`Backend`]. Repositories return domain types; row
//! decoding stays private to this module.
//!
//! # Exactly-once aggregation
//!
//! Every change to an instruction also reads its request row with the
//! row's lock and then updates it (`event_seq` one more per event, and
//! `open_instructions` one less per instruction that became terminal; see
//! `aftermath`). The lock makes changes to one request serialise, so
//! events get gap-free sequence numbers, and exactly one transaction sees
//! `open_instructions` reach zero: that one writes the completion record.

mod aftermath;
mod audit;
mod breakers;
mod cancel_notices;
mod checkpoint;
mod chunks;
mod claim_steps;
mod claims;
mod codec;
mod connect;
mod deliveries;
mod due;
mod due_reads;
mod erase;
mod error;
mod events;
mod export_digest;
mod fetches;
mod instructions;
mod intake;
mod limits;
mod notify;
mod opened;
mod picks;
mod processors;
mod purge;
mod records;
mod request_clock;
mod requests;
mod reseal;
pub mod scratch;
mod sealed;
mod sent;
mod sql;
mod sqlite_build;
mod stats;
mod trail;
mod transition;
mod write_tx;

use std::sync::{Arc, OnceLock};

use sqlx::{AnyPool, Connection};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::domain::{InstructionView, Jurisdiction, OverallOutcome, RequestId, RequestKind};

pub use audit::TrailCheck;
pub use breakers::Breaker;
pub use cancel_notices::CancelNotice;
pub use chunks::{ChunkRefused, ChunkTotals, MAX_CHUNKS};
pub use claim_steps::Leased;
pub use claims::{ClaimKind, ClaimOrder, Claimed};
pub use connect::{Backend, StoreOptions, redact_url, sqlite_file};
pub use deliveries::{DeliveryAttemptRow, DeliveryReport, DeliveryResult};
pub use due::Budget;
pub use erase::{Erased, ErasureSchedule};
pub use error::StoreError;
pub use events::{EventKind, RequestEvent};
pub use instructions::{InstructionCursor, InstructionFilter, InstructionOrder, InstructionPage};
pub use intake::Intake;
pub use opened::RecordBatch;
pub use requests::{RequestCursor, RequestFilter, RequestOrder, RequestPage};
pub use reseal::Resealed;
pub use scratch::ScratchDatabase;
pub use stats::Stats;
use write_tx::{SqliteTurns, SqliteWriter, Turn};

/// How long [`Store::answers`] waits for the database: well inside
/// Kubernetes' default probe timeout and Prometheus's scrape timeout.
const PING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Wakes the dispatcher when new work is committed by this process.
    work: Arc<Notify>,
    /// Tells watchers (WatchRequest) which request got new events.
    events: broadcast::Sender<RequestId>,
    /// SQLite only: the exclusive lock that keeps a second process off the
    /// file; released by [`Store::close`] (or when the last clone is
    /// dropped), whichever comes first.
    process_lock: Option<Arc<std::sync::Mutex<Option<std::fs::File>>>>,
    /// The database URL (PostgreSQL's notice listener connects with it).
    url: Arc<str>,
    /// Told about committed changes (metrics); shared by every clone,
    /// the background tasks' handles included, so set at any time.
    observer: Arc<std::sync::OnceLock<Arc<dyn StoreObserver>>>,
    /// SQLite only: the one connection every write transaction uses, in
    /// turn (see [`Store::begin`]).
    sqlite_writer: Option<Arc<SqliteTurns>>,
    /// The intake writer's queue (group commit), set when the writer
    /// starts (see [`Store::intake_writer`]).
    intake: Arc<OnceLock<mpsc::Sender<intake::Job>>>,
    /// PostgreSQL only: the queue of notices to other replicas, set when
    /// the publisher starts (see [`Store::notice_publisher`]).
    publisher: Arc<OnceLock<mpsc::Sender<notify::Notice>>>,
    /// Submissions this process is taking in right now (see
    /// [`Store::submissions_in_progress`]).
    submitting: crate::in_progress::InProgress,
    /// The longest a caller waits for the database (the pool's acquire
    /// timeout): a submission that has no answer by then is told so.
    wait: std::time::Duration,
    /// Seals and opens personal data at rest (see [`crate::seal`]).
    keys: Arc<crate::seal::Keyring>,
    /// Write transactions a batching writer keeps in flight (see
    /// [`Store::batch_writers`]).
    writers: usize,
}

impl Store {
    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many write transactions a batching writer (intake, the
    /// recorder) keeps in flight: `--write-transactions` when set, or on
    /// PostgreSQL one per four cores of this machine, one to four, so that
    /// a replica with cores to spare overlaps a batch's commit with writing
    /// the next, while one on a small machine, where PostgreSQL already has
    /// the cores busy, does not split its batches for nothing (on two cores
    /// three recorder and two intake writers carried less than one of
    /// each); on SQLite, whose writers take turns anyway, always one.
    pub fn batch_writers(&self) -> usize {
        self.writers
    }

    /// Where the data lives: the SQLite file's absolute path, or the
    /// PostgreSQL URL with its password masked.
    pub fn location(&self) -> String {
        match self.backend {
            Backend::Sqlite => connect::sqlite_path(&self.url)
                .map(|p| std::path::absolute(&p).unwrap_or(p).display().to_string())
                .unwrap_or_else(|| "memory".into()),
            Backend::Postgres => connect::redact_url(&self.url),
        }
    }

    /// The notifier the dispatcher waits on for new work.
    pub fn work_notifier(&self) -> Arc<Notify> {
        self.work.clone()
    }

    /// Subscribes to "request X has new events" notices from this process.
    pub fn subscribe_events(&self) -> broadcast::Receiver<RequestId> {
        self.events.subscribe()
    }

    /// Whether the database answers a trivial query within [`PING_WAIT`]:
    /// what `/readyz`, gRPC health and `dsr_database_up` report.
    pub async fn answers(&self) -> bool {
        let ping = sqlx::query("select 1").execute(&self.pool);
        matches!(tokio::time::timeout(PING_WAIT, ping).await, Ok(Ok(_)))
    }

    /// Closes the pool, waiting for connections to be returned, and the
    /// SQLite writer connection (after the transaction in progress), then
    /// releases the SQLite file to other processes (tasks that still hold a
    /// clone, such as a finishing recorder, can no longer write to it).
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(writer) = &self.sqlite_writer
            && let Some(w) = writer.conn.lock().await.take()
        {
            let _ = w.conn.close().await;
        }
        if let Some(lock) = &self.process_lock {
            lock.lock().expect("process lock").take();
        }
    }

    /// Publishes the effects of a committed transaction: at once to this
    /// process (watchers, dispatcher, observer), and on PostgreSQL to the
    /// other replicas through the publisher, without waiting for it (see
    /// [`notify`]).
    fn announce(&self, effects: Effects) {
        for id in &effects.touched {
            // No receivers is fine: nobody is watching.
            let _ = self.events.send(*id);
        }
        if effects.new_work {
            self.work.notify_one();
        }
        if let Some(observer) = self.observer.get() {
            for v in &effects.changed {
                observer.instruction_changed(v);
            }
            for c in &effects.closed {
                observer.request_closed(c);
            }
        }
        if let Some(publisher) = self.publisher.get() {
            let notice = notify::Notice {
                touched: effects.touched,
                new_work: effects.new_work,
            };
            if publisher.try_send(notice).is_err() {
                tracing::debug!("notice queue full; other replicas will poll");
            }
        }
    }

    /// Adds the observer of committed changes (metrics), for this handle
    /// and every clone of it; a store has at most one (a second is ignored).
    pub fn with_observer(self, observer: Arc<dyn StoreObserver>) -> Self {
        if self.observer.set(observer).is_err() {
            tracing::warn!("the store already has an observer; the new one is ignored");
        }
        self
    }
}

/// What a committed transaction changed, for those who follow along.
#[derive(Debug, Default)]
pub(super) struct Effects {
    /// Requests with new events.
    pub touched: Vec<RequestId>,
    /// Instructions after their change.
    pub changed: Vec<InstructionView>,
    /// Requests that got their completion record.
    pub closed: Vec<ClosedRequest>,
    /// Whether instructions became due (wake dispatchers).
    pub new_work: bool,
}

/// A request that just got its completion record.
#[derive(Clone, Debug)]
pub struct ClosedRequest {
    /// The request.
    pub id: RequestId,
    /// Its kind.
    pub kind: RequestKind,
    /// Its regime.
    pub jurisdiction: Jurisdiction,
    /// The nature of the response.
    pub outcome: OverallOutcome,
}

/// Told about every committed change, after the commit. Implementations
/// must be quick and must not fail (metrics).
pub trait StoreObserver: Send + Sync + 'static {
    /// An instruction changed state.
    fn instruction_changed(&self, _view: &InstructionView) {}
    /// A request got its completion record.
    fn request_closed(&self, _closed: &ClosedRequest) {}
    /// `requests` finished requests lost their personal data, and
    /// `suppressed` identities joined the suppression list, in one
    /// committed transaction.
    fn personal_data_erased(&self, _requests: usize, _suppressed: usize) {}
    /// One committed resealing transaction wrote `values` under the active
    /// key and keyed `fingerprints`.
    fn resealed(&self, _values: u64, _fingerprints: u64) {}
}

/// Helpers for the store's unit tests.
#[cfg(test)]
pub(super) mod testing {
    use sqlx::Row;

    use super::sql::Sql;
    use super::{Backend, Store, StoreOptions};

    /// SQLite's plan for `sql`, one line per step.
    pub(in crate::store) async fn plan(store: &Store, sql: Sql) -> Vec<String> {
        let mut explain = Sql::new(Backend::Sqlite, "explain query plan ");
        explain.text.push_str(&sql.text);
        explain.binds = sql.binds;
        explain
            .query()
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    /// A store on a fresh SQLite file, and the directory that holds it
    /// (keep it as long as the store).
    pub async fn sqlite() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/dsr.db", dir.path().display());
        let store = Store::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        (dir, store)
    }

    /// Writes a bare processor row `p<n>` in `conn`'s transaction: a
    /// write that needs nothing else in the database.
    pub async fn insert_processor(conn: &mut sqlx::AnyConnection, n: i64) {
        sqlx::query(
            "insert into processors (id, display_name, role, country, spec, adapter_kind, \
             status, token_hash, created_at, updated_at) \
             values ($1, 'P', 'VENDOR', 'JP', '{}', 'manual', 'ACTIVE', $2, 0, 0)",
        )
        .bind(format!("p{n}"))
        .bind(format!("h{n}"))
        .execute(conn)
        .await
        .unwrap();
    }
}
