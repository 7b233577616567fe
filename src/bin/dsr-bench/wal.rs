//! PostgreSQL's write-ahead log over a measured phase: bytes per
//! instruction, from the WAL insert position read before and after.
//!
//! Throughput on a shared two-core machine moves by 5-10 % from one run to
//! the next; the WAL a run writes moves much less (the same workload writes
//! the same row versions and index entries), so it shows what a change to
//! the write path saved even when the throughput cannot, provided the runs
//! compared had as many checkpoints inside the phase (each adds whole
//! pages to the log; the server's log says when they start). The position is
//! exact at any moment (`pg_stat_wal`'s counters are not: backends report
//! them up to seconds late), and it is the whole cluster's: anything else
//! writing to the same server during the phase is counted too.

use sqlx::{Connection, PgConnection, Row};

/// The cluster's WAL insert position at one moment, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct WalMark {
    bytes: f64,
}

impl WalMark {
    /// Reads the position through `url` (a PostgreSQL database URL).
    pub async fn read(url: &str) -> anyhow::Result<Self> {
        let mut conn = PgConnection::connect(url).await?;
        let row = sqlx::query(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8 as bytes",
        )
        .fetch_one(&mut conn)
        .await?;
        let mark = Self {
            bytes: row.try_get("bytes")?,
        };
        let _ = conn.close().await;
        Ok(mark)
    }

    /// Bytes written from `self` to `later`, per instruction.
    pub fn per_instruction(&self, later: &WalMark, instructions: u64) -> Option<f64> {
        (instructions > 0).then(|| (later.bytes - self.bytes) / instructions as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_is_the_difference_shared_out() {
        let before = WalMark { bytes: 50_000.0 };
        let after = WalMark { bytes: 150_000.0 };
        assert_eq!(before.per_instruction(&after, 100), Some(1_000.0));
        assert_eq!(before.per_instruction(&after, 0), None);
    }
}
