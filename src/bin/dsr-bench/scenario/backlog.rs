//! `backlog`: the fan-out scenario on a database that already holds K
//! finished requests, to show whether the cost per request grows with the
//! history (claims, watches and record writes should touch only open work,
//! so it should not). The preload goes through the public API with the same
//! processors, so the history looks exactly like real history.

use std::time::Instant;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use super::Bench;
use super::fanout;
use crate::cli::Backend;
use crate::progress;
use crate::report::Report;

/// Runs the scenario.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let settings = bench.settings;
    let mut report = bench.report();
    if settings.preload > 0 {
        let preload = fanout::measure(bench, settings.preload, "preload").await?;
        if !preload.records.complete() {
            bail!(
                "preload: {} of {} requests have no complete record after {} s",
                preload.records.missing + preload.records.incomplete,
                settings.preload,
                settings.timeout.as_secs()
            );
        }
        let rate = preload
            .time_to_last_record
            .map(|d| settings.preload as f64 / d.as_secs_f64().max(1e-9));
        progress::note(
            None,
            &format!(
                "preload: {} finished requests in {:.2} s ({:.1} requests/s, {:.1} instructions/s)",
                settings.preload,
                preload
                    .time_to_last_record
                    .unwrap_or_default()
                    .as_secs_f64(),
                rate.unwrap_or_default(),
                preload
                    .instructions_per_sec(settings.processors)
                    .unwrap_or_default()
            ),
        );
        report.preload_requests_per_sec = rate;
        if settings.vacuum
            && bench.target.backend == Some(Backend::Postgres)
            && let Some(url) = bench.target.database_url()
        {
            vacuum(url).await?;
            report.preload_vacuumed = true;
        }
        if let Some(url) = bench.target.postgres_url() {
            checkpoint(url).await;
        }
    }
    let phase = fanout::measure(bench, settings.requests, "backlog").await?;
    fanout::fill(&mut report, phase, settings.processors);
    Ok(report)
}

/// `VACUUM (ANALYZE)` of the preloaded database: what autovacuum would have
/// done while such a history built up (see `--no-vacuum`).
async fn vacuum(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(url)
        .await
        .context("cannot connect to the preloaded database to vacuum it")?;
    sqlx::raw_sql("vacuum (analyze)")
        .execute(&mut conn)
        .await
        .context("VACUUM (ANALYZE) of the preloaded database failed")?;
    let _ = conn.close().await;
    progress::note(
        None,
        &format!(
            "preload: vacuumed and analysed in {:.1} s (--no-vacuum to skip)",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// A `CHECKPOINT` after the preload, so that the measured phase starts
/// right after one, as the empty database's does (each run's `DROP
/// DATABASE` ends with one). Otherwise the measured phase inherits the
/// preload's checkpoint debt (hundreds of megabytes of WAL, thousands of
/// dirty pages): checkpoints start at once and write the preload's pages
/// out during it, which a server whose history built up over days did
/// long ago. Without the right to checkpoint the bench says so and goes
/// on.
async fn checkpoint(url: &str) {
    let started = Instant::now();
    let done = async {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::raw_sql("checkpoint").execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let note = match done {
        Ok(()) => format!(
            "preload: checkpoint in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            format!("preload: no checkpoint ({e}); the measured phase may pay for the preload's")
        }
    };
    progress::note(None, &note);
}
