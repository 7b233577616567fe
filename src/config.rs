//! Configuration: every setting is a command-line flag with a `DSR_*`
//! environment variable, so the same binary runs from a shell, systemd or a
//! Helm chart. `--help` documents each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::dispatch::DispatchConfig;
use crate::domain::Period;
use crate::store::StoreOptions;
use crate::telemetry::LogFormat;

mod values;
use values::{
    at_least_a_second, at_least_one, at_least_one_call, database_url, duration, interval, positive,
    public_url, retention,
};

/// SQLite durability level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SqliteSynchronous {
    /// fsync every commit.
    Full,
    /// fsync at checkpoints.
    Normal,
}

/// dsr-orchestrator: fans data-subject-rights requests out to every
/// processor, tracks each answer and keeps one completion record per request.
#[derive(Clone, Debug, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(
        long = "listen",
        env = "DSR_LISTEN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Address of the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
    #[arg(
        long = "admin-listen",
        env = "DSR_ADMIN_LISTEN_ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Serve the admin listener over TLS with the `--tls-cert` pair,
    /// reloaded with it. It asks for no client certificate, whatever
    /// `--tls-client-ca` says: Kubernetes probes present none.
    #[arg(long, env = "DSR_ADMIN_TLS")]
    pub admin_tls: bool,

    /// A file holding the bearer token `/metrics` requires
    /// (`Authorization: Bearer TOKEN`). Read at every scrape, so replacing
    /// it takes effect at once; `/healthz` and `/readyz` stay open.
    #[arg(long, env = "DSR_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Database URL: `sqlite://FILE` (embedded, one process) or
    /// `postgres://USER@HOST/DB`. The SQLite file is created if missing.
    #[arg(
        long,
        env = "DSR_DATABASE_URL",
        default_value = "sqlite://dsr.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// YAML file of processors to upsert at startup (see README, "Processors file").
    #[arg(long, env = "DSR_PROCESSORS_FILE")]
    pub processors_file: Option<PathBuf>,

    /// Most database connections in the pool.
    #[arg(long, env = "DSR_DB_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,

    /// How long a query waits for a free connection before failing, e.g.
    /// `10s`: above 0s (no wait would fail every call that finds the pool
    /// busy) and at most a day.
    #[arg(long, env = "DSR_DB_ACQUIRE_TIMEOUT", default_value = "10s", value_parser = interval)]
    pub db_acquire_timeout: Duration,

    /// SQLite only: `full` fsyncs every commit (an acknowledged request
    /// survives power loss); `normal` fsyncs at checkpoints only (survives a
    /// process crash, may lose the last commits on power loss; faster).
    #[arg(long, env = "DSR_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSynchronous::Full)]
    pub sqlite_synchronous: SqliteSynchronous,

    /// PostgreSQL only: write transactions intake and the recorder each
    /// keep in flight while work queues, 1 to 8, each on a connection of
    /// its own; `0` picks one per four cores (1 to 4). SQLite writes one
    /// at a time whatever this says.
    #[arg(long, env = "DSR_WRITE_TRANSACTIONS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=8))]
    pub write_transactions: u32,

    /// Most deliveries claimed or awaiting answers at once across all processors, and
    /// most results being written (see `docs/decisions/0008-deliveries-in-flight.md`).
    #[arg(long, env = "DSR_MAX_IN_FLIGHT", default_value_t = 2048, value_parser = at_least_one)]
    pub max_in_flight: usize,

    /// Longest pause between dispatcher passes when nothing wakes it, e.g. `1s`.
    #[arg(long, env = "DSR_POLL_INTERVAL", default_value = "1s", value_parser = interval)]
    pub poll_interval: Duration,

    /// Added to a push delivery's timeout to form its lease, e.g. `30s`.
    #[arg(long, env = "DSR_LEASE_MARGIN", default_value = "30s", value_parser = duration)]
    pub lease_margin: Duration,

    /// While submissions queue, claims stop at a quarter of `--max-in-flight` (64 at most)
    /// being claimed or written back (not awaiting processors) until the oldest due push
    /// delivery is this late, e.g. `30s`; `0s` turns the rule off.
    #[arg(long, env = "DSR_INTAKE_PRIORITY", default_value = "30s", value_parser = duration)]
    pub intake_priority: Duration,

    /// How long shutdown waits for deliveries in flight, e.g. `20s`.
    #[arg(long, env = "DSR_DRAIN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Consecutive failed deliveries to one push processor that open its
    /// circuit breaker (deliveries stop for `--breaker-cooldown`, then one
    /// probe); 0 turns breakers off.
    #[arg(long, env = "DSR_BREAKER_FAILURES", default_value_t = 10)]
    pub breaker_failures: u32,

    /// How long an open breaker waits before its probe, e.g. `30s`; it
    /// doubles after each failed probe, up to 16 times this.
    #[arg(long, env = "DSR_BREAKER_COOLDOWN", default_value = "30s", value_parser = duration)]
    pub breaker_cooldown: Duration,

    /// Log format.
    #[arg(long, env = "DSR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Serve gRPC over TLS with this certificate chain (PEM; with
    /// `--tls-key`). Read again when it changes.
    #[arg(long, env = "DSR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "DSR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM): mutual TLS.
    /// Needs `--tls-cert`.
    #[arg(long, env = "DSR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the TLS files and the auth file are checked for changes.
    #[arg(long, env = "DSR_RELOAD_INTERVAL", default_value = "10s", value_parser = interval)]
    pub reload_interval: Duration,

    /// YAML file of the principals this server knows: static API tokens
    /// (by SHA-256), JWT settings, client-certificate mappings, each with
    /// roles (see docs/security.md). Read again when it changes.
    #[arg(long, env = "DSR_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// Listen beyond loopback without authenticating callers. Anyone who
    /// reaches the port can then do anything but speak for a processor.
    #[arg(long, env = "DSR_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Accept push processors at plaintext `http://` endpoints beyond
    /// loopback (identities then cross the network readable).
    #[arg(long, env = "DSR_ALLOW_PLAINTEXT_PROCESSORS")]
    pub allow_plaintext_processors: bool,

    /// This orchestrator's URL as processors reach it (the gRPC port), e.g.
    /// `https://dsr.example.com`, without user information, query or
    /// fragment: OpenDSR processors are given
    /// `<URL>/opendsr/callbacks/<processor_id>` for their status callbacks.
    /// Unset: they are polled only.
    #[arg(long, env = "DSR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Largest message taken or sent, in bytes (the largest valid one fits).
    #[arg(long, env = "DSR_MAX_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1024 * 1024..=64 * 1024 * 1024))]
    pub max_message_size: u32,

    /// Most concurrent streams (calls) on one HTTP/2 connection.
    #[arg(long, env = "DSR_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Most connections open at once on the gRPC listener; a newcomer
    /// beyond it closes the quietest. Unset: half the descriptor limit
    /// (soft `RLIMIT_NOFILE`), 256 to 65,536.
    #[arg(long, env = "DSR_MAX_CONNECTIONS", value_parser = at_least_one)]
    pub max_connections: Option<usize>,

    /// How long data of a streamed access report or export may wait for a
    /// reader who stopped reading before the reader's connection is
    /// closed, e.g. `60s`.
    #[arg(long, env = "DSR_STALLED_READER_TIMEOUT", default_value = "60s", value_parser = interval)]
    pub stalled_reader_timeout: Duration,

    /// Most calls in progress at once, all callers together; beyond it
    /// calls are answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "DSR_MAX_CALLS_IN_FLIGHT", default_value_t = 1024, value_parser = at_least_one)]
    pub max_calls_in_flight: usize,

    /// Calls per second one caller (principal, processor) may make.
    #[arg(long, env = "DSR_RATE_LIMIT", default_value_t = 200.0, value_parser = positive)]
    pub rate_limit: f64,

    /// Calls one caller may make at once beyond `--rate-limit`.
    #[arg(long, env = "DSR_RATE_BURST", default_value_t = 400.0, value_parser = at_least_one_call)]
    pub rate_burst: f64,

    /// Most open WatchRequest streams, all callers together.
    #[arg(long, env = "DSR_MAX_WATCHES", default_value_t = 1000, value_parser = at_least_one)]
    pub max_watches: usize,

    /// Most open WatchRequest streams of one caller.
    #[arg(long, env = "DSR_MAX_WATCHES_PER_CALLER", default_value_t = 100, value_parser = at_least_one)]
    pub max_watches_per_caller: usize,

    /// YAML file of the compliance policy where it differs from the
    /// defaults: deadlines per jurisdiction, business-day calendars with
    /// holiday files, minimum verification levels (see docs/compliance.md).
    #[arg(long, env = "DSR_COMPLIANCE_FILE")]
    pub compliance_file: Option<PathBuf>,

    /// How long completion records and audit trails are kept after the
    /// response, e.g. `24 months` or `730 days`; then they are purged with
    /// the rest of the request.
    #[arg(long, env = "DSR_RECORD_RETENTION", default_value = "24 months", value_parser = retention)]
    pub record_retention: Period,

    /// YAML file of the keys that seal personal data at rest and the secret
    /// of its keyed hashes (see docs/data-protection.md). Without it (and
    /// without `DSR_KEYS`) a server on loopback with SQLite generates a
    /// development key file beside its database; anywhere else it refuses
    /// to start.
    #[arg(long, env = "DSR_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,

    /// The keys file's text itself, instead of `--keys-file`: read from
    /// `DSR_KEYS` only (never a flag, which process listings show).
    #[arg(skip = std::env::var("DSR_KEYS").ok())]
    pub keys: Option<String>,

    /// How long the personal data of a completed access or portability
    /// request is kept for the business's report before it is erased
    /// (other kinds, and cancelled requests, are erased once finished),
    /// e.g. `7d`.
    #[arg(long, env = "DSR_REPORT_WINDOW", default_value = "7d", value_parser = duration)]
    pub report_window: Duration,

    /// How often finished requests' personal data is erased (at least `1s`).
    #[arg(long, env = "DSR_ERASE_INTERVAL", default_value = "30s", value_parser = at_least_a_second)]
    pub erase_interval: Duration,

    /// How often the retention purge looks for requests past their period
    /// (at least `1s`).
    #[arg(long, env = "DSR_PURGE_INTERVAL", default_value = "1h", value_parser = at_least_a_second)]
    pub purge_interval: Duration,
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

impl Config {
    /// Checks what clap cannot without printing it: the database URL and
    /// the public URL, which may hold a password (clap's refusal quotes
    /// the value). Refusals name the setting, never its value.
    /// [`crate::startup::Application::build`] calls it first.
    pub fn check(&self) -> anyhow::Result<()> {
        database_url(&self.database_url)
            .map_err(|why| anyhow::anyhow!("--database-url (DSR_DATABASE_URL): {why}"))?;
        if let Some(url) = &self.public_url {
            public_url(url)
                .map_err(|why| anyhow::anyhow!("--public-url (DSR_PUBLIC_URL): {why}"))?;
        }
        Ok(())
    }

    /// Pool settings.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            sqlite_sync_every_commit: self.sqlite_synchronous == SqliteSynchronous::Full,
            write_transactions: self.write_transactions as usize,
            ..StoreOptions::default()
        }
    }

    /// The server's TLS files, when it serves TLS.
    pub fn tls_files(&self) -> Option<crate::tls::server::TlsFiles> {
        Some(crate::tls::server::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The limits on callers.
    pub fn limits(&self) -> crate::api::limits::LimitSettings {
        crate::api::limits::LimitSettings {
            calls_in_flight: self.max_calls_in_flight,
            rate: self.rate_limit,
            burst: self.rate_burst,
            watches_per_caller: self.max_watches_per_caller,
            watches: self.max_watches,
            stalled_reader: self.stalled_reader_timeout,
        }
    }

    /// The keys that seal personal data at rest: the keys file, `DSR_KEYS`,
    /// or, on loopback with a SQLite file, a development key file beside
    /// the database (generated on first start); the second value says so.
    pub fn keyring(&self) -> anyhow::Result<(crate::seal::Keyring, Option<PathBuf>)> {
        use crate::seal::Keyring;
        if let Some(path) = &self.keys_file {
            return Ok((Keyring::load(path)?, None));
        }
        if let Some(text) = &self.keys {
            let ring = Keyring::parse(text).map_err(|e| anyhow::anyhow!("DSR_KEYS: {e}"))?;
            return Ok((ring, None));
        }
        let refuse = || {
            anyhow::anyhow!(
                "no keys to seal personal data at rest: set --keys-file (DSR_KEYS_FILE) or \
                 DSR_KEYS (see docs/data-protection.md); only a server on loopback with \
                 SQLite makes a development key of its own"
            )
        };
        if !self.listen.ip().is_loopback() {
            return Err(refuse());
        }
        let Some(db) = crate::store::sqlite_file(&self.database_url) else {
            return Err(refuse());
        };
        let mut path = db.into_os_string();
        path.push(".keys");
        let path = PathBuf::from(path);
        if !path.exists() {
            let id = format!("dev-{}", chrono::Utc::now().format("%Y%m%d"));
            write_private(&path, &Keyring::generate(&id)).map_err(|e| {
                anyhow::anyhow!(
                    "cannot write the development key file {}: {e}",
                    path.display()
                )
            })?;
        }
        Ok((Keyring::load(&path)?, Some(path)))
    }

    /// The compliance policy: the file's, or the defaults.
    pub fn compliance(&self) -> anyhow::Result<crate::compliance_file::CompliancePolicy> {
        match &self.compliance_file {
            Some(path) => crate::compliance_file::load(path),
            None => Ok(crate::compliance_file::CompliancePolicy::default()),
        }
    }

    /// Dispatcher settings.
    pub fn dispatch_config(&self) -> DispatchConfig {
        DispatchConfig {
            max_in_flight: self.max_in_flight,
            poll_interval: self.poll_interval,
            lease_margin: self.lease_margin,
            intake_priority: self.intake_priority,
            drain_timeout: self.drain_timeout,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: self.breaker_cooldown,
        }
    }

    /// Defaults with the given database, listening on a free loopback port:
    /// what tests start from.
    pub fn for_tests(database_url: &str) -> Self {
        let mut c = Config::parse_from(["dsr-orchestrator"]);
        c.listen = "127.0.0.1:0".parse().expect("address");
        c.admin_listen = "127.0.0.1:0".parse().expect("address");
        c.database_url = database_url.to_string();
        c
    }
}
