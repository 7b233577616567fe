//! The command line. Flags are shared by the three scenarios; each scenario
//! fills in its own defaults for the ones left out, so `dsr-bench fanout`
//! alone is a meaningful run. [`Cli::settings`] resolves the flags into the
//! [`Settings`] the rest of the bench reads, and rejects combinations that
//! make no sense before anything is started.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioKind {
    /// C clients submit deletion requests for D seconds: requests/s and
    /// submit latency.
    Intake,
    /// Submit R requests to P processors and wait for every completion
    /// record: instructions/s end to end.
    Fanout,
    /// Preload K finished requests, then run `fanout`: does the cost per
    /// request grow with the history?
    Backlog,
    /// One processor uploads R data records in chunks; its access report
    /// is streamed back: records/s each way, and the server's peak memory.
    AccessReport,
}

impl ScenarioKind {
    /// The name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intake => "intake",
            Self::Fanout => "fanout",
            Self::Backlog => "backlog",
            Self::AccessReport => "access-report",
        }
    }
}

/// The database behind the orchestrator, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The name used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// dsr-bench: measures what one dsr-orchestrator replica can carry, through
/// its public gRPC API, with in-process fake processors.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: ScenarioKind,

    /// Start the orchestrator built next to this binary on a fresh database
    /// (the default when --target is not given).
    #[arg(long, conflicts_with = "target")]
    pub spawn: bool,

    /// With --spawn: `sqlite://...` (a new file in a temporary directory)
    /// or `postgres://USER@HOST[:PORT]/DB` (a new database
    /// `dsr_bench_<random>` is created on that server and dropped
    /// afterwards).
    #[arg(
        long,
        default_value = "sqlite://dsr-bench.db",
        conflicts_with = "target"
    )]
    pub database_url: String,

    /// Keep the fresh database (spawn mode) instead of removing it.
    #[arg(long, conflicts_with = "target")]
    pub keep_database: bool,

    /// With --spawn: a setting for the spawned orchestrator, as
    /// `DSR_NAME=value` (repeatable), e.g. `DSR_MAX_IN_FLIGHT=4096`. Without
    /// it the server runs on its defaults: the caller's own `DSR_*`
    /// variables never reach it.
    #[arg(long, value_name = "DSR_NAME=VALUE", conflicts_with = "target")]
    pub server_setting: Vec<String>,

    /// With --spawn on PostgreSQL: start this many orchestrators on the one
    /// fresh database, sharing the work (clients spread their connections
    /// over them).
    #[arg(long, default_value_t = 1, conflicts_with = "target")]
    pub replicas: usize,

    /// Use an orchestrator already running at this address (host:port).
    #[arg(long)]
    pub target: Option<SocketAddr>,

    /// With --target: the backend to name in the report (else "unknown").
    #[arg(long, value_enum, requires = "target")]
    pub backend: Option<Backend>,

    /// fanout/backlog: requests to submit and follow to their records
    /// [default: 2000]; access-report: records to upload [default: 100000].
    #[arg(long)]
    pub requests: Option<u64>,

    /// Fake processors each request fans out to.
    #[arg(long, default_value_t = 5)]
    pub processors: u32,

    /// Concurrent clients (intake) or submitters (fanout, backlog).
    #[arg(long, default_value_t = 64)]
    pub clients: u32,

    /// intake: seconds of submitting.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// backlog: finished requests to preload before the fanout
    /// [default: 20000].
    #[arg(long)]
    pub preload: Option<u64>,

    /// backlog: requests, after the preload, whose processors accept them
    /// and never send the outcome (their instructions wait, acknowledged,
    /// through the measured phase).
    #[arg(long)]
    pub awaiting: Option<u64>,

    /// backlog on PostgreSQL (spawn mode): skip the `VACUUM (ANALYZE)` run
    /// after every 25,000 preloaded requests (the last chunk included, so
    /// before the measured phase). The preload stands for history built up
    /// over days, which autovacuum would have cleaned as it went; without
    /// it, the preload and the measured phase pay for every dead row
    /// version (PostgreSQL servers run with autovacuum off, as CI's does,
    /// keep them all).
    #[arg(long)]
    pub no_vacuum: bool,

    /// Fake processors wait this long before answering.
    #[arg(long, default_value_t = 0)]
    pub processor_latency_ms: u64,

    /// Fraction of deliveries the fake processors answer with UNAVAILABLE
    /// (which the orchestrator retries), 0 to 0.9.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,

    /// The fake processors' registered `max_in_flight`, 1 to 1000; unset
    /// (the default) for the adaptive limit.
    #[arg(long)]
    pub processor_max_in_flight: Option<u32>,

    /// Seconds to wait, per phase, for every request's completion record
    /// before giving up.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,

    /// Also print the figures as one JSON object, the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// Where the orchestrator comes from.
#[derive(Clone, Debug)]
pub enum TargetSpec {
    /// Spawn it on a fresh database made from this URL.
    Spawn {
        /// The URL naming the backend (and, for PostgreSQL, the server).
        database_url: String,
        /// Leave the fresh database behind.
        keep_database: bool,
        /// `DSR_*` settings for the server, beyond the bench's own.
        settings: Vec<(String, String)>,
        /// Orchestrators started on the database.
        replicas: usize,
    },
    /// Connect to a running one.
    Remote {
        /// Its gRPC address.
        addr: SocketAddr,
        /// The backend to report, if the caller knows it.
        backend: Option<Backend>,
    },
}

/// The resolved run settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The scenario.
    pub scenario: ScenarioKind,
    /// Where the orchestrator comes from.
    pub target: TargetSpec,
    /// Requests for fanout/backlog (0 for intake, which counts its own).
    pub requests: u64,
    /// Processors per request.
    pub processors: u32,
    /// Concurrent clients or submitters.
    pub clients: u32,
    /// Intake's submitting time.
    pub duration: Duration,
    /// Finished requests to preload (backlog only; 0 otherwise).
    pub preload: u64,
    /// Requests left waiting for outcomes after the preload (backlog
    /// only; 0 otherwise).
    pub awaiting: u64,
    /// backlog: vacuum the preloaded PostgreSQL database before measuring.
    pub vacuum: bool,
    /// Fake processors' answer delay.
    pub processor_latency: Duration,
    /// Fake processors' UNAVAILABLE fraction.
    pub failure_rate: f64,
    /// Fake processors' registered `max_in_flight` (`None`: adaptive).
    pub processor_max_in_flight: Option<u32>,
    /// Per-phase wait for records.
    pub timeout: Duration,
    /// Print the JSON line.
    pub json: bool,
}

impl Cli {
    /// Applies the scenario's defaults and checks the ranges.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        if self.processors == 0 || self.processors > 100 {
            bail!("--processors must be 1 to 100");
        }
        if self.clients == 0 || self.clients > 4096 {
            bail!("--clients must be 1 to 4096");
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            bail!("--duration must be a positive number of seconds (at most a day)");
        }
        if !(0.0..=0.9).contains(&self.failure_rate) {
            bail!("--failure-rate must be between 0 and 0.9");
        }
        if self
            .processor_max_in_flight
            .is_some_and(|n| !(1..=1000).contains(&n))
        {
            bail!("--processor-max-in-flight must be 1 to 1000");
        }
        if self.timeout == 0 {
            bail!("--timeout must be at least 1 second");
        }
        let requests = match self.scenario {
            ScenarioKind::Intake => {
                if self.requests.is_some() {
                    bail!("--requests is for fanout and backlog; intake runs for --duration");
                }
                0
            }
            ScenarioKind::AccessReport => self.requests.unwrap_or(100_000),
            _ => self.requests.unwrap_or(2000),
        };
        if self.scenario != ScenarioKind::Intake && requests == 0 {
            bail!("--requests must be at least 1");
        }
        let preload = match self.scenario {
            ScenarioKind::Backlog => self.preload.unwrap_or(20_000),
            _ if self.preload.is_some() => bail!("--preload is for the backlog scenario"),
            _ => 0,
        };
        if self.awaiting.is_some() && self.scenario != ScenarioKind::Backlog {
            bail!("--awaiting is for the backlog scenario");
        }
        if !(1..=16).contains(&self.replicas) {
            bail!("--replicas must be 1 to 16");
        }
        if self.replicas > 1 && !self.database_url.starts_with("postgres") {
            bail!(
                "--replicas above 1 needs a PostgreSQL --database-url (SQLite serves one replica)"
            );
        }
        let target = match self.target {
            Some(addr) => TargetSpec::Remote {
                addr,
                backend: self.backend,
            },
            None => TargetSpec::Spawn {
                database_url: self.database_url.clone(),
                keep_database: self.keep_database,
                replicas: self.replicas,
                settings: self
                    .server_setting
                    .iter()
                    .map(|s| server_setting(s))
                    .collect::<anyhow::Result<_>>()?,
            },
        };
        Ok(Settings {
            scenario: self.scenario,
            target,
            requests,
            processors: self.processors,
            clients: self.clients,
            duration: Duration::from_secs_f64(self.duration),
            preload,
            awaiting: self.awaiting.unwrap_or(0),
            vacuum: !self.no_vacuum,
            processor_latency: Duration::from_millis(self.processor_latency_ms),
            failure_rate: self.failure_rate,
            processor_max_in_flight: self.processor_max_in_flight,
            timeout: Duration::from_secs(self.timeout),
            json: self.json,
        })
    }
}

/// Parses one `--server-setting`.
fn server_setting(s: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = s.split_once('=') else {
        bail!("--server-setting {s:?}: expected DSR_NAME=value");
    };
    if !name.starts_with("DSR_") || name.len() == 4 {
        bail!("--server-setting {s:?}: the name must be a DSR_* setting");
    }
    if crate::server::BENCH_OWNED.contains(&name) {
        bail!("--server-setting {s:?}: the bench sets {name} itself");
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
