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
//! Every change to an instruction also updates its request row
//! (`event_seq = event_seq + 1`, and `open_instructions - 1` when the
//! instruction became terminal) with `RETURNING`. That update takes the
//! request's row lock, so changes to one request serialise, events get gap-free
//! sequence numbers, and exactly one transaction sees `open_instructions`
//! reach zero: that one writes the completion record.

mod checkpoint;
mod claims;
mod codec;
mod connect;
mod deliveries;
mod events;
mod instructions;
mod intake;
mod notify;
mod processors;
mod records;
mod requests;
mod sql;
mod stats;
mod transition;

use std::sync::Arc;

use sqlx::{AnyPool, Connection};
use tokio::sync::{Notify, broadcast};

use crate::domain::{
    InstructionView, Jurisdiction, OverallOutcome, RequestId, RequestKind, Violations,
};

pub use claims::{ClaimKind, ClaimOrder, Claimed};
pub use connect::{Backend, StoreOptions};
pub use deliveries::{DeliveryReport, DeliveryResult};
pub use events::{EventKind, RequestEvent};
pub use instructions::{DeliveryAttemptRow, InstructionFilter, InstructionPage};
pub use intake::{Intake, Submitting};
pub use requests::{RequestCursor, RequestFilter, RequestPage};
pub use stats::Stats;

/// Errors of the store, classified for the API layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
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
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Another process holds the SQLite file.
    #[error(
        "the SQLite database {0} is in use by another dsr-orchestrator process; \
         SQLite serves one process — use PostgreSQL to run several replicas"
    )]
    InUse(String),
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

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
    /// PostgreSQL only: relays other replicas' notifications.
    _listener: Option<Arc<notify::Listener>>,
    /// Told about committed changes (metrics); shared by every clone,
    /// the background tasks' handles included, so set at any time.
    observer: Arc<std::sync::OnceLock<Arc<dyn StoreObserver>>>,
    /// SQLite only: the one connection every write transaction uses, in
    /// turn (see [`Store::begin`]).
    sqlite_writer: Option<Arc<SqliteTurns>>,
    /// The intake writer's queue (group commit); `None` only inside the
    /// writer itself.
    intake: Option<tokio::sync::mpsc::Sender<intake::Job>>,
    /// PostgreSQL only: the queue of notices to other replicas; `None`
    /// inside the publisher itself.
    publisher: Option<tokio::sync::mpsc::Sender<notify::Notice>>,
    /// Submissions this process is taking in right now (see
    /// [`Store::submissions_in_progress`]).
    submitting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Store {
    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The notifier the dispatcher waits on for new work.
    pub fn work_notifier(&self) -> Arc<Notify> {
        self.work.clone()
    }

    /// Subscribes to "request X has new events" notices from this process.
    pub fn subscribe_events(&self) -> broadcast::Receiver<RequestId> {
        self.events.subscribe()
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
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

    /// Starts a write transaction. PostgreSQL takes a pooled connection and
    /// locks rows as it goes.
    ///
    /// SQLite has one write lock, so writers take turns on one dedicated
    /// connection, and `BEGIN IMMEDIATE` takes the lock at once (a
    /// transaction never fails half-way on a lock upgrade; pooled
    /// connections queuing in SQLite's busy handler slept in steps). One
    /// connection, because SQLite empties a connection's page cache
    /// whenever another connection has written since it last read, so
    /// writers rotating through the pool each start cold. Measured against
    /// pooled writers taking the same turns: no difference on fanout 20,000
    /// x 5 (3,084 against 3,045 instructions/s), for 47 MB more RSS (the
    /// writer's larger page cache); larger databases were not compared.
    ///
    /// Turns alternate between intake and everyone else (see [`Turn`]).
    async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.begin_turn(Turn::Other).await
    }

    /// [`Store::begin`], taking the given kind of turn on SQLite.
    async fn begin_turn(&self, turn: Turn) -> Result<WriteTx, StoreError> {
        let Some(writer) = &self.sqlite_writer else {
            return Ok(WriteTx::Pooled(self.pool.begin().await?));
        };
        let others = match turn {
            Turn::Intake => None,
            Turn::Other => Some(writer.others.clone().lock_owned().await),
        };
        let mut guard = writer.conn.clone().lock_owned().await;
        let w = SqliteWriter::settled(guard.as_mut()).await?;
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut w.conn)
            .await?;
        w.open = true;
        Ok(WriteTx::Sqlite {
            writer: HeldWriter(Some(guard)),
            _others: others,
        })
    }

    /// A read-only transaction whose statements all see one snapshot, for
    /// reads made of several statements (a request and its instructions):
    /// on PostgreSQL `REPEATABLE READ` (under the default READ COMMITTED
    /// each statement would see the commits made since the one before); on
    /// SQLite any read transaction does (WAL mode). Commit it when done, so
    /// the snapshot does not outlive the read.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Postgres => {
                self.pool
                    .begin_with("begin isolation level repeatable read, read only")
                    .await?
            }
            Backend::Sqlite => self.pool.begin().await?,
        })
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
        if let Some(publisher) = &self.publisher {
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
}

/// Whose turn a SQLite write transaction takes.
///
/// Writers queue for the connection in order of arrival, but all writers
/// other than intake (the dispatcher's claims and recorded results, API
/// callbacks, operator actions on instructions and requests) first queue
/// among themselves, so at most one of them waits for the connection at a
/// time. (Two kinds of write stay outside the turns: the checkpointer's
/// rare turn to finish a checkpoint, and processor registration and
/// updates, single autocommit statements on pooled connections that wait
/// for SQLite's lock in its busy handler.) When both are waiting,
/// intake and the rest therefore take turns: a submission, on which an API
/// caller waits, never waits behind more than one other transaction, and
/// deliveries still get every other turn however fast submissions come.
/// Before, with plain arrival order, the dispatcher's two writers took two
/// turns in three. Intake on SQLite (64 clients, 5 processors) went from
/// about 1,580 to 2,400 requests/s; fanout 20,000 x 5 stayed at about
/// 4,300 instructions/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// The intake writer (one task, group-committing submissions).
    Intake,
    /// Everyone else.
    Other,
}

/// SQLite's writer connection and the queue of non-intake writers.
pub(super) struct SqliteTurns {
    /// The connection (`None` once closed).
    pub conn: Arc<tokio::sync::Mutex<Option<SqliteWriter>>>,
    /// Held by a non-intake writer from before it queues for `conn` until
    /// its transaction ends.
    pub others: Arc<tokio::sync::Mutex<()>>,
}

/// SQLite's writer connection, and whether a transaction is open on it.
pub(super) struct SqliteWriter {
    pub conn: sqlx::AnyConnection,
    pub open: bool,
}

impl SqliteWriter {
    /// The writer, just taken from its mutex, with no transaction open: one
    /// dropped without commit or rollback (its task failed or was
    /// cancelled) is rolled back first. Fails once the store is closed.
    async fn settled(writer: Option<&mut Self>) -> Result<&mut Self, StoreError> {
        let w = writer.ok_or(StoreError::Database(sqlx::Error::PoolClosed))?;
        if w.open {
            match sqlx::raw_sql("ROLLBACK").execute(&mut w.conn).await {
                Ok(_) => {}
                // SQLite already rolled it back itself (after a full disk,
                // an I/O error): nothing is open any more.
                Err(sqlx::Error::Database(e))
                    if e.message().contains("no transaction is active") => {}
                Err(e) => return Err(e.into()),
            }
            w.open = false;
        }
        Ok(w)
    }
}

/// A write transaction: a pooled PostgreSQL transaction, or SQLite's writer
/// connection (held until the transaction ends). Dereferences to the
/// connection.
pub(super) enum WriteTx {
    Pooled(sqlx::Transaction<'static, sqlx::Any>),
    Sqlite {
        // Dropped in this order: the connection goes to the next in line
        // before another non-intake writer may queue for it.
        writer: HeldWriter,
        _others: Option<tokio::sync::OwnedMutexGuard<()>>,
    },
}

/// SQLite's writer connection, held for one transaction.
///
/// Dropped with its transaction still open (the task holding it failed or
/// was cancelled, as when an RPC's caller goes away), it has a task of its
/// own roll the transaction back at once. Left to the next writer's turn,
/// SQLite's write lock stayed held as long as no other transaction came
/// along, and a pooled write outside the turns (processor registration)
/// waited for it in its busy handler and failed.
pub(super) struct HeldWriter(Option<tokio::sync::OwnedMutexGuard<Option<SqliteWriter>>>);

impl HeldWriter {
    fn get(&self) -> &SqliteWriter {
        self.0
            .as_ref()
            .and_then(|g| g.as_ref())
            .expect("writer present while held")
    }

    fn get_mut(&mut self) -> &mut SqliteWriter {
        self.0
            .as_mut()
            .and_then(|g| g.as_mut())
            .expect("writer present while held")
    }
}

impl Drop for HeldWriter {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        if !guard.as_ref().is_some_and(|w| w.open) {
            return;
        }
        let mutex = tokio::sync::OwnedMutexGuard::mutex(&guard).clone();
        // Released first: a writer already waiting settles it just as well.
        drop(guard);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut writer = mutex.lock_owned().await;
            if let Some(w) = writer.as_mut()
                && let Err(e) = SqliteWriter::settled(Some(w)).await
            {
                tracing::warn!(error = %e, "could not roll back an abandoned SQLite transaction");
            }
        });
    }
}

impl WriteTx {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.end(true).await
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.end(false).await
    }

    async fn end(self, commit: bool) -> Result<(), sqlx::Error> {
        match self {
            WriteTx::Pooled(tx) if commit => tx.commit().await,
            WriteTx::Pooled(tx) => tx.rollback().await,
            WriteTx::Sqlite { mut writer, .. } => {
                let w = writer.get_mut();
                let end = if commit { "COMMIT" } else { "ROLLBACK" };
                sqlx::raw_sql(end).execute(&mut w.conn).await?;
                w.open = false;
                Ok(())
            }
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            WriteTx::Pooled(tx) => tx,
            WriteTx::Sqlite { writer, .. } => &writer.get().conn,
        }
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            WriteTx::Pooled(tx) => tx,
            WriteTx::Sqlite { writer, .. } => &mut writer.get_mut().conn,
        }
    }
}

/// Helpers for the store's unit tests.
#[cfg(test)]
pub(super) mod testing {
    use super::{Store, StoreOptions};

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

    /// The test server's admin database, as for the API tests.
    fn admin_url() -> String {
        std::env::var("DSR_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A store on a fresh PostgreSQL database on the local test server
    /// (`DSR_TEST_POSTGRES_URL`, as for the API tests), and its name for
    /// [`drop_postgres`]. `None` when the server is unreachable, as the API
    /// tests skip their PostgreSQL half, unless `DSR_REQUIRE_POSTGRES=1`.
    pub async fn postgres() -> Option<(String, Store)> {
        use sqlx::Connection;
        let admin_url = admin_url();
        let name = format!("dsr_unit_{}", uuid::Uuid::new_v4().simple());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(admin) => admin,
            Err(e) if std::env::var("DSR_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
                panic!("PostgreSQL is required (DSR_REQUIRE_POSTGRES=1) but unreachable: {e}")
            }
            Err(e) => {
                eprintln!("NOTE: PostgreSQL unreachable ({e}); test skipped");
                return None;
            }
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let store = Store::connect(&postgres_url(&name), &StoreOptions::default())
            .await
            .unwrap();
        Some((name, store))
    }

    /// The URL of the database `name` made by [`postgres`], for a second
    /// store on it (another replica).
    pub fn postgres_url(name: &str) -> String {
        let admin_url = admin_url();
        format!("{}/{name}", &admin_url[..admin_url.rfind('/').unwrap()])
    }

    /// Closes `store` and drops its database made by [`postgres`].
    pub async fn drop_postgres(name: &str, store: Store) {
        use sqlx::Connection;
        store.close().await;
        let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists {name} with (force)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts processors in a snapshot before and after another transaction
    /// adds one, and outside it afterwards.
    async fn counts_around_a_commit(store: &Store) -> (i64, i64, i64) {
        let mut tx = store.begin().await.unwrap();
        testing::insert_processor(&mut tx, 1).await;
        tx.commit().await.unwrap();
        let count = "select count(*) from processors";
        let mut snapshot = store.snapshot().await.unwrap();
        let before: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        testing::insert_processor(&mut tx, 2).await;
        tx.commit().await.unwrap();
        let within: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut *snapshot)
            .await
            .unwrap();
        snapshot.commit().await.unwrap();
        let after: i64 = sqlx::query_scalar(count)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        (before, within, after)
    }

    /// Reads in a snapshot do not see what commits after its first read.
    #[tokio::test]
    async fn a_snapshot_sees_one_moment_sqlite() {
        let (_dir, store) = testing::sqlite().await;
        let counts = counts_around_a_commit(&store).await;
        store.close().await;
        assert_eq!(counts, (1, 1, 2));
    }

    #[tokio::test]
    async fn a_snapshot_sees_one_moment_postgres() {
        let Some((name, store)) = testing::postgres().await else {
            return;
        };
        let counts = counts_around_a_commit(&store).await;
        testing::drop_postgres(&name, store).await;
        assert_eq!(counts, (1, 1, 2), "REPEATABLE READ");
    }

    /// Runs `statement` in a transaction of its own, rolled back: whether
    /// the database took it.
    async fn takes(store: &Store, statement: &str) -> bool {
        let mut tx = store.begin().await.unwrap();
        let taken = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .is_ok();
        tx.rollback().await.unwrap();
        taken
    }

    /// An insert of a bare instruction row.
    fn instruction(id: &str, request: &str, processor: &str) -> String {
        format!(
            "insert into instructions (id, request_id, processor_id, kind, jurisdiction, \
             submitted_at, state, created_at) \
             values ('{id}', '{request}', '{processor}', 'DELETE', 'CCPA', 0, 'PENDING', 0)"
        )
    }

    /// An insert of a bare delivery attempt.
    fn attempt(instruction: &str) -> String {
        format!(
            "insert into delivery_attempts (instruction_id, attempt, started_at, result) \
             values ('{instruction}', 1, 0, 'pending')"
        )
    }

    /// An insert of a bare event.
    fn event(request: &str, seq: i64) -> String {
        format!(
            "insert into request_events (request_id, seq, occurred_at, body) \
             values ('{request}', {seq}, 0, '{{}}')"
        )
    }

    /// An insert of a bare completion record.
    fn record(request: &str) -> String {
        format!(
            "insert into completion_records (request_id, canonical_json, digest, created_at) \
             values ('{request}', '{{}}', '{}', 0)",
            "0".repeat(64)
        )
    }

    /// No row can refer to a missing request, processor or instruction,
    /// and no row referred to can go or change its key: foreign keys on
    /// SQLite, batch checks and refusals on PostgreSQL (migration 0006).
    async fn references_hold(store: &Store) {
        let mut tx = store.begin().await.unwrap();
        testing::insert_processor(&mut tx, 1).await;
        let request = "insert into requests (id, kind, jurisdiction, status, submitted_at, \
             received_at, channel, requester, verification_level, verification_method, labels, \
             identity_types, subject, fingerprint, open_instructions, event_seq) values ('r1', \
             'DELETE', 'CCPA', 'RECEIVED', 0, 0, 'test', 'SELF', 'NONE', 'none', '{}', '[]', \
             null, 'f', 1, 1)";
        for statement in [
            request.to_string(),
            instruction("i1", "r1", "p1"),
            attempt("i1"),
            event("r1", 1),
            record("r1"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert!(
            takes(store, &event("r1", 2)).await,
            "a row whose parent exists is taken"
        );
        for refused in [
            instruction("i2", "nope", "p1"),
            instruction("i2", "r1", "nope"),
            attempt("nope"),
            event("nope", 1),
            record("nope"),
            "delete from requests where id = 'r1'".into(),
            "delete from processors where id = 'p1'".into(),
            "delete from instructions where id = 'i1'".into(),
            "update requests set id = 'r2' where id = 'r1'".into(),
            "update instructions set request_id = 'nope' where id = 'i1'".into(),
            "update instructions set processor_id = 'nope' where id = 'i1'".into(),
        ] {
            assert!(!takes(store, &refused).await, "refused: {refused}");
        }
    }

    #[tokio::test]
    async fn references_hold_sqlite() {
        let (_dir, store) = testing::sqlite().await;
        references_hold(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn references_hold_postgres() {
        let Some((name, store)) = testing::postgres().await else {
            return;
        };
        references_hold(&store).await;
        testing::drop_postgres(&name, store).await;
    }

    /// Intake waiting behind several other writers goes next: the others
    /// queue among themselves first.
    #[tokio::test]
    async fn intake_waits_behind_at_most_one_other_writer() {
        let (_dir, store) = testing::sqlite().await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = store.begin().await.unwrap();
        let mut tasks = Vec::new();
        for (name, turn) in [
            ("a", Turn::Other),
            ("b", Turn::Other),
            ("intake", Turn::Intake),
        ] {
            let (store, order) = (store.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let tx = store.begin_turn(turn).await.unwrap();
                order.lock().unwrap().push(name);
                tx.commit().await.unwrap();
            }));
            // On this single-threaded runtime, one yield runs the new task
            // until it waits for its turn.
            tokio::task::yield_now().await;
        }
        assert!(order.lock().unwrap().is_empty(), "all wait");
        running.commit().await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["intake", "a", "b"]);
        store.close().await;
    }
}
