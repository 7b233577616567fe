//! The orchestrator under measurement, spawned or already running, behind
//! one interface: connections to it, whether it is still alive, its
//! process's memory and CPU when the bench owns it, and the cleanup that
//! must run however the scenario ended.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Backend, TargetSpec};
use crate::database::FreshDatabase;
use crate::server::Server;
use crate::usage::{Memory, RssSampler};

/// A reachable orchestrator.
pub struct Target {
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its backend, when known.
    pub backend: Option<Backend>,
    /// Set when the bench spawned it.
    owned: Option<Owned>,
}

/// What a spawned target brings along.
struct Owned {
    server: Mutex<Server>,
    database: FreshDatabase,
    keep_database: bool,
    rss: RssSampler,
}

impl Target {
    /// Spawns the orchestrator on a fresh database, or checks that the
    /// given one answers.
    pub async fn open(spec: &TargetSpec) -> anyhow::Result<Self> {
        let target = match spec {
            TargetSpec::Remote { addr, backend } => Target {
                addr: *addr,
                backend: *backend,
                owned: None,
            },
            TargetSpec::Spawn {
                database_url,
                keep_database,
                settings,
            } => {
                let database = FreshDatabase::create(database_url).await?;
                let server = match Server::start(&database.url, settings).await {
                    Ok(server) => server,
                    Err(e) => {
                        // Best effort: the start error is the one to report.
                        let _ = database.finish(*keep_database).await;
                        return Err(e);
                    }
                };
                Target {
                    addr: server.addr,
                    backend: Some(database.backend),
                    owned: Some(Owned {
                        rss: RssSampler::start(server.pid()),
                        server: Mutex::new(server),
                        database,
                        keep_database: *keep_database,
                    }),
                }
            }
        };
        // Fails early, with the address in the message, if nothing answers.
        target.channel().await?;
        Ok(target)
    }

    /// The URL of the fresh database of a spawned orchestrator.
    pub fn database_url(&self) -> Option<&str> {
        self.owned.as_ref().map(|o| o.database.url.as_str())
    }

    /// The URL of the fresh database of a spawned orchestrator on
    /// PostgreSQL (what the WAL figures are read through).
    pub fn postgres_url(&self) -> Option<&str> {
        (self.backend == Some(Backend::Postgres))
            .then(|| self.database_url())
            .flatten()
    }

    /// A new HTTP/2 connection to the orchestrator (each simulated client
    /// gets its own, as separate services would).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to the orchestrator at {}", self.addr))
    }

    /// The server's process id, as `/proc` names it, when spawned.
    pub fn pid(&self) -> Option<&str> {
        self.owned.as_ref().map(|o| o.rss.pid())
    }

    /// An error if the spawned server has exited.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        match &self.owned {
            Some(owned) => owned
                .server
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check_alive(),
            None => Ok(()),
        }
    }

    /// Samples the spawned server's memory, stops it and removes its
    /// database (unless kept). Memory is unknown for a `--target`.
    pub async fn finish(self) -> anyhow::Result<Memory> {
        let Some(owned) = self.owned else {
            return Ok(Memory::default());
        };
        let memory = owned.rss.finish();
        owned
            .server
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .stop();
        owned.database.finish(owned.keep_database).await?;
        Ok(memory)
    }
}
