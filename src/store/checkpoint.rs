//! SQLite checkpoints, off the writer's path.
//!
//! In WAL mode every commit appends pages to the write-ahead log, and a
//! checkpoint copies them back into the database file. SQLite's default is
//! to checkpoint inside the commit that pushes the log past 1,000 pages, on
//! the committing connection: with one writer connection, every write
//! would wait while the writer copied pages and synced the database file
//! (about 15 % of intake on SQLite).
//!
//! So no connection checkpoints by itself (`wal_autocheckpoint = 0`), and
//! this task checkpoints in `PASSIVE` mode on a pooled connection every
//! [`INTERVAL`], beside the writer: copying pages never blocks a writer or
//! a reader. But SQLite rewinds the log only at a commit that finds every
//! page already copied, and under unbroken write load a checkpoint running
//! beside the writer never ends in that state: the log grew past 2 GB in a
//! 20-second fanout. So when the log is longer than [`REWIND_FRAMES`], the
//! checkpoint then takes the writer's turn for a moment and copies what was
//! committed while it ran (a fraction of the log); the next commit rewinds
//! the log, and `journal_size_limit` trims the file. The threshold is
//! 64 MiB: at 16 MiB intake load crossed it at most ticks, each crossing
//! costing the writer a turn.

use std::time::Duration;

use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

/// How often the log is checkpointed.
pub(super) const INTERVAL: Duration = Duration::from_millis(250);

/// Log length in pages past which a checkpoint finishes in the writer's
/// turn, so that the next commit rewinds the log: 64 MiB at SQLite's
/// default page size (4 KiB), which the store does not change.
pub(super) const REWIND_FRAMES: i64 = 16_384;

/// What one checkpoint did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Another checkpoint was running: this one did nothing (and `log`,
    /// `copied` are -1).
    pub busy: bool,
    /// Pages in the log.
    pub log: i64,
    /// Pages of it now copied into the database file.
    pub copied: i64,
}

impl Store {
    /// SQLite's checkpointer, to run on a task of its own until `stop`;
    /// `None` on PostgreSQL.
    pub fn checkpointer(
        &self,
        stop: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.sqlite_writer.as_ref()?;
        let store = self.clone();
        Some(async move {
            let mut ticks = tokio::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let done = match store.checkpoint(false).await {
                    Ok(c) if c.log > REWIND_FRAMES => store.checkpoint(true).await,
                    done => done,
                };
                match done {
                    Ok(_) => {}
                    // The store was closed under us: done.
                    Err(StoreError::Database(e)) if matches!(*e, sqlx::Error::PoolClosed) => return,
                    Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; will retry"),
                }
            }
        })
    }

    /// Copies the write-ahead log into the database file: beside the writer
    /// (on a free pooled connection; with none free, as below), or
    /// (`between_writes`) holding the writer's turn, so that every page is
    /// copied. A no-op (an empty report) on PostgreSQL.
    pub(super) async fn checkpoint(&self, between_writes: bool) -> Result<Checkpoint, StoreError> {
        let Some(writer) = &self.sqlite_writer else {
            return Ok(Checkpoint {
                busy: false,
                log: 0,
                copied: 0,
            });
        };
        // Beside the writer on a pooled connection, if one is free at once:
        // the log must not wait for readers to let one go.
        if !between_writes && let Some(mut conn) = self.pool.try_acquire() {
            return passive(&mut conn).await;
        }
        let mut guard = writer.conn.lock().await;
        let w = super::SqliteWriter::settled(guard.as_mut()).await?;
        passive(&mut w.conn).await
    }
}

async fn passive(conn: &mut AnyConnection) -> Result<Checkpoint, StoreError> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(Checkpoint {
        busy: row.try_get::<i64, _>(0)? != 0,
        log: row.try_get(1)?,
        copied: row.try_get(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    async fn write(store: &Store, n: i64) {
        let mut tx = store.begin().await.unwrap();
        testing::insert_processor(&mut tx, n).await;
        tx.commit().await.unwrap();
    }

    /// A checkpoint that did not collide with the store's own checkpointer.
    async fn unbusy(store: &Store, between_writes: bool) -> Checkpoint {
        for _ in 0..1000 {
            let c = store.checkpoint(between_writes).await.unwrap();
            if !c.busy {
                return c;
            }
            tokio::task::yield_now().await;
        }
        panic!("the checkpointer stayed busy");
    }

    #[tokio::test]
    async fn the_writer_leaves_checkpoints_to_the_checkpointer_which_rewinds_the_log() {
        let (_dir, store) = testing::sqlite().await;
        let mut tx = store.begin().await.unwrap();
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(auto, 0, "the writer never checkpoints in its commits");
        for n in 0..50 {
            write(&store, n).await;
        }
        // Between writes, everything is copied...
        let before = unbusy(&store, true).await;
        assert!(before.log > 0, "{before:?}");
        assert_eq!(before.copied, before.log, "{before:?}");
        // ... so the next commit starts the log from the beginning: it holds
        // only that commit's few pages.
        write(&store, 50).await;
        let after = unbusy(&store, false).await;
        assert!(after.log > 0 && after.log < 10, "{after:?}");
        assert_eq!(after.copied, after.log);
        store.close().await;
    }
}
