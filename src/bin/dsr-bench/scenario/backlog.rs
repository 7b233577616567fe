//! `backlog`: the fan-out scenario on a database that already holds K
//! finished requests, to show whether the cost per request grows with the
//! history (claims, watches and record writes should touch only open work,
//! so it should not). The preload goes through the public API with the same
//! processors, so the history looks exactly like real history.
//!
//! With `--awaiting N`, N more requests follow the preload whose
//! processors accept and never answer: their instructions wait,
//! acknowledged, for outcomes due in days, as a processor's do while it
//! works through its deletions. The dispatcher's passes must not pay for
//! them either (their reminders and escalations are far off).

use std::time::Instant;

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

use super::Bench;
use super::fanout;
use crate::cli::Backend;
use crate::progress;
use crate::records;
use crate::report::Report;

/// Requests preloaded between two vacuums on PostgreSQL.
const PRELOAD_CHUNK: u64 = 25_000;

/// Runs the scenario.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let settings = bench.settings;
    let mut report = bench.report();
    if settings.preload > 0 {
        // On PostgreSQL the preload goes in chunks, each followed by the
        // vacuum autovacuum would have run while such a history built up
        // (the development machines run without autovacuum, and without
        // the vacuums a preload of 200,000 requests leaves about a million
        // dead row versions and slows down as it goes). Elsewhere it goes
        // in one.
        let vacuuming = settings.vacuum
            && bench.target.backend == Some(Backend::Postgres)
            && bench.target.database_url().is_some();
        let chunk = if vacuuming {
            PRELOAD_CHUNK
        } else {
            settings.preload
        };
        let mut done = 0;
        let mut took = std::time::Duration::ZERO;
        while done < settings.preload {
            let n = chunk.min(settings.preload - done);
            let preload = fanout::measure(bench, n, "preload").await?;
            if !preload.records.complete() {
                bail!(
                    "preload: {} of {} requests have no complete record after {} s",
                    preload.records.missing + preload.records.incomplete,
                    n,
                    settings.timeout.as_secs()
                );
            }
            took += preload.time_to_last_record.unwrap_or_default();
            done += n;
            if vacuuming && let Some(url) = bench.target.database_url() {
                vacuum(url).await?;
            }
        }
        let rate = (!took.is_zero()).then(|| settings.preload as f64 / took.as_secs_f64());
        progress::note(
            None,
            &format!(
                "preload: {} finished requests in {:.2} s of fan-out ({:.1} requests/s, {:.1} instructions/s)",
                settings.preload,
                took.as_secs_f64(),
                rate.unwrap_or_default(),
                rate.unwrap_or_default() * f64::from(settings.processors)
            ),
        );
        report.preload_requests_per_sec = rate;
        report.preload_vacuumed = vacuuming;
    }
    if settings.awaiting > 0 {
        awaiting(bench, settings.awaiting).await?;
    }
    if settings.preload + settings.awaiting > 0
        && let Some(url) = bench.target.postgres_url()
    {
        checkpoint(url).await;
    }
    let phase = fanout::measure(bench, settings.requests, "backlog").await?;
    fanout::fill(&mut report, phase, settings.processors);
    Ok(report)
}

/// Submits `count` requests whose processors accept them and never send
/// the outcome, and waits until every instruction has been accepted.
async fn awaiting(bench: &Bench<'_>, count: u64) -> anyhow::Result<()> {
    let settings = bench.settings;
    let started = Instant::now();
    bench.fleet.reset();
    bench.fleet.set_accepting(true);
    progress::note(
        None,
        &format!("awaiting: submitting {count} requests whose processors accept and never answer"),
    );
    let batch = bench.submit(count).await?;
    let expected = batch.submitted.len() as u64 * u64::from(settings.processors);
    let deadline = Instant::now() + settings.timeout;
    records::await_count(bench.target, || bench.fleet.accepted(), expected, deadline).await?;
    bench.fleet.set_accepting(false);
    let accepted = bench.fleet.accepted();
    if accepted < expected {
        bail!(
            "awaiting: {accepted} of {expected} instructions accepted after {} s",
            settings.timeout.as_secs()
        );
    }
    progress::note(
        None,
        &format!(
            "awaiting: {count} requests acknowledged by every processor in {:.2} s",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// `VACUUM (ANALYZE)` of the preloaded database: what autovacuum would have
/// done while such a history built up (see `--no-vacuum`). It runs after
/// each chunk of the preload, the last one included.
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

/// A `CHECKPOINT` after the preload and the awaiting requests, so that the measured phase starts
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
            "checkpoint before the measured phase in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            format!("no checkpoint before the measured phase ({e}); it may pay for the preload's")
        }
    };
    progress::note(None, &note);
}
