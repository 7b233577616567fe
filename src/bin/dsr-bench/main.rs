//! `dsr-bench`: measures what one dsr-orchestrator replica can carry, so
//! operators can size a deployment and we can tell whether a change made it
//! faster (issue 4). It drives the orchestrator only through its public
//! gRPC API, with fake processors that are real gRPC servers in this
//! process, and prints its figures: a table for people and, with `--json`,
//! one JSON line for scripts. It asserts nothing: speed targets are read
//! off its output, never checked by tests.
//!
//! # Layout
//!
//! - `cli`: flags, per-scenario defaults.
//! - `target`: the orchestrator under test, spawned (`server`, on a
//!   `database` made for the run) or given by `--target`; `usage` reads its
//!   memory and CPU from `/proc`.
//! - `fake`: the fake processors.
//! - `submission`, `records`: sending requests, and following them to their
//!   completion records.
//! - `scenario`: intake, fanout, backlog.
//! - `report`, `stats`, `progress`: output.

mod cli;
mod database;
mod fake;
mod progress;
mod records;
mod report;
mod scenario;
mod server;
mod stats;
mod submission;
mod target;
mod usage;
mod wal;

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;

use crate::cli::{Cli, Settings};
use crate::target::Target;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = cli.settings().and_then(|settings| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(run(&settings))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line: the context chain, outermost first.
            eprintln!("dsr-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the target, runs the scenario, cleans up whatever happened, and
/// prints the report.
async fn run(settings: &Settings) -> anyhow::Result<()> {
    let target = Target::open(&settings.target).await?;
    let measured = scenario::run(settings, &target).await;
    // Stop the server and drop its database even when the scenario failed.
    let memory = target.finish().await;
    let mut report = measured?;
    let memory = memory?;
    report.rss_mb = memory.peak_mb;
    report.rss_sampled_mb = memory.sampled_mb;
    let report = report.rounded();
    print!("{}", report.table());
    if settings.json {
        println!("{}", report.json()?);
    }
    if !report.records_complete {
        bail!(
            "not every request got its completion record within {} s (see the table)",
            settings.timeout.as_secs()
        );
    }
    Ok(())
}
