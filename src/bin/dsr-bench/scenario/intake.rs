//! `intake`: C clients, each on its own connection, submit deletion
//! requests back to back for D seconds; every call's latency is kept. The
//! processors answer meanwhile, so the server does what it does in steady
//! state (take requests in and fan them out) rather than only fill a queue.
//! After the window the bench waits, unmeasured, for every accepted request
//! to get its record, so a run also proves nothing was lost under load.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use tonic::transport::Channel;

use super::Bench;
use crate::progress;
use crate::records;
use crate::report::Report;
use crate::stats::Percentiles;
use crate::submission::{self, Submitted};
use crate::usage::CpuMark;

/// What one client did.
#[derive(Default)]
struct ClientRun {
    latencies_ms: Vec<f64>,
    submitted: Vec<Submitted>,
    errors: u64,
    last_error: Option<String>,
}

/// Runs the scenario.
pub async fn run(bench: &Bench<'_>) -> anyhow::Result<Report> {
    let settings = bench.settings;
    bench.fleet.reset();
    let mut clients = Vec::new();
    for _ in 0..settings.clients {
        clients.push(RequestServiceClient::new(bench.target.channel().await?));
    }
    progress::note(
        None,
        &format!(
            "intake: {} clients submitting for {:.1} s, {} processors per request",
            settings.clients,
            settings.duration.as_secs_f64(),
            settings.processors
        ),
    );
    let processor_ids: Arc<[String]> = bench.fleet.ids().into();
    let cpu_start = CpuMark::now(&bench.target.pids());
    let started = Instant::now();
    let until = started + settings.duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(client_loop(client, processor_ids.clone(), until)))
        .collect();
    let bar = progress::timed("intake", settings.duration);
    while Instant::now() < until {
        bar.set_position(started.elapsed().as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
        bench.target.check_alive()?;
    }
    let mut all = ClientRun::default();
    for task in tasks {
        let run = task.await.context("an intake client panicked")??;
        all.latencies_ms.extend(run.latencies_ms);
        all.submitted.extend(run.submitted);
        all.errors += run.errors;
        all.last_error = run.last_error.or(all.last_error);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_start.since(&CpuMark::now(&bench.target.pids()), elapsed);
    bar.finish_with_message(format!("{} requests", all.submitted.len()));
    let accepted = all.submitted.len() as u64;
    progress::note(
        None,
        &format!(
            "intake: {accepted} requests accepted in {:.2} s ({} errors); waiting for their records",
            elapsed.as_secs_f64(),
            all.errors
        ),
    );

    if let Some(error) = &all.last_error {
        progress::note(None, &format!("intake: the last failed submit: {error}"));
    }

    let deadline = Instant::now() + settings.timeout;
    let expected = accepted * u64::from(settings.processors);
    records::await_answers(bench.target, &bench.fleet, expected, deadline).await?;
    let records = records::verify(
        bench.target,
        &all.submitted,
        settings.processors as usize,
        deadline,
    )
    .await?;
    let first = all.submitted.iter().map(|s| s.started).min();

    let percentiles = Percentiles::of(&mut all.latencies_ms);
    let mut report = bench.report();
    report.requests = accepted;
    report.duration_s = elapsed.as_secs_f64();
    report.requests_per_sec = Some(accepted as f64 / elapsed.as_secs_f64().max(1e-9));
    report.p50_ms = percentiles.p50;
    report.p90_ms = percentiles.p90;
    report.p99_ms = percentiles.p99;
    report.errors = all.errors;
    report.time_to_last_record_s = match (first, records.last_record) {
        (Some(first), Some(last)) => {
            Some(last.duration_since(first).unwrap_or_default().as_secs_f64())
        }
        _ => None,
    };
    report.finished_requests_per_sec = report
        .time_to_last_record_s
        .map(|t| accepted as f64 / t.max(1e-9));
    report.redeliveries = Some(bench.fleet.deliveries() as i64 - expected as i64);
    report.records_complete = records.complete();
    report.server_cpu_pct = cpu.server;
    report.bench_cpu_pct = cpu.bench;
    report.machine_cpu_pct = cpu.machine;
    Ok(report)
}

/// One client: submits back to back until `until`. Transient failures are
/// counted and the client carries on; any other failure is a bench or
/// setup error and ends the run.
async fn client_loop(
    mut client: RequestServiceClient<Channel>,
    processor_ids: Arc<[String]>,
    until: Instant,
) -> anyhow::Result<ClientRun> {
    let mut run = ClientRun::default();
    while Instant::now() < until {
        let request_id = submission::new_id();
        let request = submission::deletion(request_id.clone(), &processor_ids);
        let wall = SystemTime::now();
        let start = Instant::now();
        match client.submit_request(request).await {
            Ok(_) => {
                run.latencies_ms
                    .push(start.elapsed().as_secs_f64() * 1000.0);
                run.submitted.push(Submitted {
                    request_id,
                    started: wall,
                });
            }
            Err(status) if submission::is_transient(status.code()) => {
                run.errors += 1;
                run.last_error = Some(submission::describe(&status));
            }
            Err(status) => bail!("SubmitRequest failed: {}", submission::describe(&status)),
        }
    }
    Ok(run)
}
