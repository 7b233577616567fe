//! The scenarios. Each starts from a [`Bench`] (the target, the
//! registered fake processors and the settings) and returns a [`Report`];
//! none of them starts or stops the orchestrator, so the same code measures
//! a spawned server and a `--target`.

mod access_report;
mod backlog;
mod fanout;
mod intake;

use anyhow::Context;
use dsr_orchestrator::pb::processor_service_client::ProcessorServiceClient;

use crate::cli::{ScenarioKind, Settings, TargetSpec};
use crate::fake::{Behaviour, Fleet};
use crate::report::Report;
use crate::target::Target;

/// What every scenario works with.
pub struct Bench<'a> {
    /// The run's settings.
    pub settings: &'a Settings,
    /// The orchestrator.
    pub target: &'a Target,
    /// This run's processors.
    pub fleet: Fleet,
}

impl Bench<'_> {
    /// A report with the fields every scenario fills the same way.
    fn report(&self) -> Report {
        Report {
            scenario: self.settings.scenario.as_str(),
            backend: self.target.backend.map_or("unknown", |b| b.as_str()),
            processors: self.settings.processors,
            clients: self.settings.clients,
            replicas: self.target.replicas(),
            cores: std::thread::available_parallelism().ok().map(|n| n.get()),
            preload: self.settings.preload,
            awaiting: self.settings.awaiting,
            server_settings: match &self.settings.target {
                TargetSpec::Spawn { settings, .. } => {
                    settings.iter().map(|(k, v)| format!("{k}={v}")).collect()
                }
                TargetSpec::Remote { .. } => Vec::new(),
            },
            ..Report::default()
        }
    }

    /// Submits `count` requests to every processor of the fleet with the
    /// run's submitters, showing a progress bar.
    async fn submit(&self, count: u64) -> anyhow::Result<crate::submission::Batch> {
        let bar = crate::progress::bar("submitted", count);
        let batch = crate::submission::submit_all(
            self.target,
            count,
            self.settings.clients,
            self.fleet.ids(),
            &bar,
        )
        .await?;
        bar.finish();
        Ok(batch)
    }
}

/// Starts and registers the fake processors, then runs the scenario.
pub async fn run(settings: &Settings, target: &Target) -> anyhow::Result<Report> {
    // A long-lived orchestrator may already know `bench-p0`: tag the ids.
    let tag = match settings.target {
        TargetSpec::Remote { .. } => {
            Some(uuid::Uuid::new_v4().simple().to_string()[..6].to_string())
        }
        TargetSpec::Spawn { .. } => None,
    };
    let mut processors = ProcessorServiceClient::new(target.channel().await?);
    let behaviour = Behaviour {
        latency: settings.processor_latency,
        failure_rate: settings.failure_rate,
    };
    let fleet = Fleet::start(
        settings.processors,
        behaviour,
        settings.processor_max_in_flight,
        tag.as_deref(),
        &mut processors,
    )
    .await
    .context("cannot set up the fake processors")?;
    let bench = Bench {
        settings,
        target,
        fleet,
    };
    match settings.scenario {
        ScenarioKind::Intake => intake::run(&bench).await,
        ScenarioKind::Fanout => fanout::run(&bench).await,
        ScenarioKind::Backlog => backlog::run(&bench).await,
        ScenarioKind::AccessReport => access_report::run(&bench).await,
    }
}
