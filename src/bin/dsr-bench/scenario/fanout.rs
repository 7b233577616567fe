//! `fanout`: submit R requests to P processors and time the way to the
//! last completion record. The figure that matters is instructions
//! completed per second end to end (R x P over first submit to last
//! record): it covers intake, claiming, delivery, outcome writes and record
//! writes together. The backlog scenario reuses [`measure`] for its preload
//! and for its measured phase.

use std::time::{Duration, Instant, SystemTime};

use super::Bench;
use crate::progress;
use crate::records::{self, Records};
use crate::report::Report;
use crate::stats::Percentiles;
use crate::usage::{CpuMark, CpuUse};
use crate::wal::WalMark;

/// What one fan-out of a batch of requests measured.
pub struct Phase {
    /// Requests submitted (all accepted).
    pub requests: u64,
    /// Failed (and retried) submit calls.
    pub errors: u64,
    /// Their records.
    pub records: Records,
    /// First submit to last record.
    pub time_to_last_record: Option<Duration>,
    /// Deliveries beyond one per instruction.
    pub redeliveries: i64,
    /// CPU % of one core (server, bench) from first submit to last answer.
    pub cpu: CpuUse,
    /// WAL bytes per instruction, first submit to last record verified
    /// (PostgreSQL).
    pub wal: Option<f64>,
}

impl Phase {
    /// Instructions per second end to end.
    pub fn instructions_per_sec(&self, processors: u32) -> Option<f64> {
        let secs = self.time_to_last_record?.as_secs_f64();
        (secs > 0.0).then(|| (self.requests * u64::from(processors)) as f64 / secs)
    }
}

/// Submits `count` requests and waits for their records.
pub async fn measure(bench: &Bench<'_>, count: u64, label: &str) -> anyhow::Result<Phase> {
    let settings = bench.settings;
    bench.fleet.reset();
    let wal_start = wal_mark(bench).await?;
    let cpu_start = CpuMark::now(&bench.target.pids());
    let started = Instant::now();
    let first_submit = SystemTime::now();
    progress::note(
        None,
        &format!(
            "{label}: submitting {count} requests to {} processors with {} submitters",
            settings.processors, settings.clients
        ),
    );
    let batch = bench.submit(count).await?;
    progress::note(
        None,
        &format!(
            "{label}: {count} requests submitted in {:.2} s; waiting for their records",
            started.elapsed().as_secs_f64()
        ),
    );
    if let Some(error) = &batch.last_error {
        progress::note(
            None,
            &format!(
                "{label}: {} submit calls failed and were retried; the last: {error}",
                batch.errors
            ),
        );
    }
    let deadline = Instant::now() + settings.timeout;
    let expected = count * u64::from(settings.processors);
    records::await_answers(bench.target, &bench.fleet, expected, deadline).await?;
    let cpu = cpu_start.since(&CpuMark::now(&bench.target.pids()), started.elapsed());
    let records = records::verify(
        bench.target,
        &batch.submitted,
        settings.processors as usize,
        deadline,
    )
    .await?;
    let wal = match (wal_start, wal_mark(bench).await?) {
        (Some(start), Some(end)) => start.per_instruction(&end, expected),
        _ => None,
    };
    let first = batch
        .submitted
        .iter()
        .map(|s| s.started)
        .min()
        .unwrap_or(first_submit);
    let time_to_last_record = records
        .last_record
        .map(|last| last.duration_since(first).unwrap_or_default());
    let redeliveries = bench.fleet.deliveries() as i64 - expected as i64;
    Ok(Phase {
        requests: batch.submitted.len() as u64,
        errors: batch.errors,
        records,
        time_to_last_record,
        redeliveries,
        cpu,
        wal,
    })
}

/// The cluster's WAL position, when the bench spawned the server on
/// PostgreSQL.
async fn wal_mark(bench: &Bench<'_>) -> anyhow::Result<Option<WalMark>> {
    match bench.target.postgres_url() {
        Some(url) => Ok(Some(WalMark::read(url).await?)),
        None => Ok(None),
    }
}

/// Fills the fan-out figures of `report` from `phase`.
pub fn fill(report: &mut Report, mut phase: Phase, processors: u32) {
    let percentiles = Percentiles::of(&mut phase.records.completion_ms);
    report.requests = phase.requests;
    report.duration_s = phase.time_to_last_record.unwrap_or_default().as_secs_f64();
    report.instructions_per_sec = phase.instructions_per_sec(processors);
    report.p50_ms = percentiles.p50;
    report.p90_ms = percentiles.p90;
    report.p99_ms = percentiles.p99;
    report.errors = phase.errors;
    report.time_to_last_record_s = phase.time_to_last_record.map(|d| d.as_secs_f64());
    report.redeliveries = Some(phase.redeliveries);
    report.records_complete = phase.records.complete();
    report.server_cpu_pct = phase.cpu.server;
    report.bench_cpu_pct = phase.cpu.bench;
    report.machine_cpu_pct = phase.cpu.machine;
    report.wal_bytes_per_instruction = phase.wal;
}

/// Runs the scenario.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let phase = measure(bench, bench.settings.requests, "fanout").await?;
    let mut report = bench.report();
    fill(&mut report, phase, bench.settings.processors);
    Ok(report)
}
