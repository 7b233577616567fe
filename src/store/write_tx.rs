//! Write transactions: a pooled transaction on PostgreSQL, the one writer
//! connection in turn on SQLite; and read snapshots.
//!
//! SQLite has one write lock, so writers take turns on one dedicated
//! connection, and `BEGIN IMMEDIATE` takes the lock at once (a transaction
//! never fails half-way on a lock upgrade, and no writer sleeps in steps in
//! SQLite's busy handler). One connection, because SQLite empties a
//! connection's page cache whenever another connection has written since it
//! last read, so writers rotating through the pool would each start cold.
//! Turns alternate between intake, on which an API caller waits, and
//! everyone else (see [`Turn`] and `docs/decisions/0005-single-sqlite-writer.md`).

use std::sync::Arc;

use super::{Backend, Store, StoreError};

impl Store {
    /// Starts a write transaction (see the module documentation): a pooled
    /// connection on PostgreSQL, which locks rows as it goes; the writer's
    /// turn on SQLite.
    pub(super) async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.begin_turn(Turn::Other).await
    }

    /// [`Store::begin`], taking the given kind of turn on SQLite.
    pub(super) async fn begin_turn(&self, turn: Turn) -> Result<WriteTx, StoreError> {
        let Some(writer) = &self.sqlite_writer else {
            return Ok(WriteTx::Pooled(self.pool.begin().await?));
        };
        let others = match turn {
            Turn::Intake => None,
            Turn::Other => Some(writer.others.clone().lock_owned().await),
        };
        let mut guard = writer.conn.clone().lock_owned().await;
        SqliteWriter::settled(guard.as_mut()).await?;
        let mut held = HeldWriter(Some(guard));
        let w = held.get_mut();
        // Open from before `BEGIN`: a caller that gives up while it waits
        // for the lock leaves a transaction that SQLite may still start,
        // and the writer's drop (or the next writer) rolls it back.
        w.open = true;
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut w.conn)
            .await?;
        Ok(WriteTx::Sqlite {
            writer: held,
            _others: others,
        })
    }

    /// A read-only transaction whose statements all see one snapshot, for
    /// reads made of several statements (a request and its instructions):
    /// on PostgreSQL `REPEATABLE READ` (under the default READ COMMITTED
    /// each statement would see the commits made since the one before); on
    /// SQLite any read transaction does (WAL mode). Commit it when done, so
    /// the snapshot does not outlive the read.
    pub(super) async fn snapshot(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Postgres => {
                self.pool
                    .begin_with("begin isolation level repeatable read, read only")
                    .await?
            }
            Backend::Sqlite => self.pool.begin().await?,
        })
    }
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
    pub(super) async fn settled(writer: Option<&mut Self>) -> Result<&mut Self, StoreError> {
        let w = writer.ok_or(StoreError::from(sqlx::Error::PoolClosed))?;
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
/// own roll the transaction back at once: left to the next writer's turn,
/// SQLite's write lock would stay held as long as no other transaction
/// came along, and a pooled write outside the turns (processor
/// registration) would wait for it in its busy handler and fail.
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

#[cfg(test)]
mod tests {
    use super::super::testing;
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

    /// Reads in a snapshot do not see what commits after its first read
    /// (on PostgreSQL: `tests/api/store.rs`).
    #[tokio::test]
    async fn a_snapshot_sees_one_moment_sqlite() {
        let (_dir, store) = testing::sqlite().await;
        let counts = counts_around_a_commit(&store).await;
        store.close().await;
        assert_eq!(counts, (1, 1, 2));
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
