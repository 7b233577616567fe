//! The orchestrator under measurement, spawned or already running, behind
//! one interface: connections to it, whether it is still alive, its
//! processes' memory and CPU when the bench owns them, and the cleanup that
//! must run however the scenario ended. Several replicas spawned on one
//! database (`--replicas`) are one target: new connections go to each in
//! turn, their CPU is summed and their peak memory is the largest.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Backend, TargetSpec};
use crate::database::FreshDatabase;
use crate::server::Server;
use crate::usage::{Memory, RssSampler};

/// A reachable orchestrator (one or several replicas).
pub struct Target {
    /// Its replicas' gRPC addresses.
    addrs: Vec<SocketAddr>,
    /// The replica the next connection goes to.
    next: AtomicUsize,
    /// Its backend, when known.
    pub backend: Option<Backend>,
    /// Set when the bench spawned it.
    owned: Option<Owned>,
}

/// What a spawned target brings along.
struct Owned {
    replicas: Vec<Replica>,
    database: FreshDatabase,
    keep_database: bool,
}

/// One spawned server and its memory sampler.
struct Replica {
    server: Mutex<Server>,
    rss: RssSampler,
}

impl Target {
    /// Spawns the orchestrator on a fresh database, or checks that the
    /// given one answers.
    pub async fn open(spec: &TargetSpec) -> anyhow::Result<Self> {
        let target = match spec {
            TargetSpec::Remote { addr, backend } => Target {
                addrs: vec![*addr],
                next: AtomicUsize::new(0),
                backend: *backend,
                owned: None,
            },
            TargetSpec::Spawn {
                database_url,
                keep_database,
                settings,
                replicas,
            } => {
                let database = FreshDatabase::create(database_url).await?;
                // One keyring for every replica: they open each other's rows.
                let keys = dsr_orchestrator::seal::Keyring::generate("bench");
                let mut started = Vec::new();
                for _ in 0..*replicas {
                    match Server::start(&database.url, &keys, settings).await {
                        Ok(server) => started.push(Replica {
                            rss: RssSampler::start(server.pid()),
                            server: Mutex::new(server),
                        }),
                        Err(e) => {
                            for r in started {
                                r.server
                                    .into_inner()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .stop();
                            }
                            // Best effort: the start error is the one to report.
                            let _ = database.finish(*keep_database).await;
                            return Err(e);
                        }
                    }
                }
                Target {
                    addrs: started
                        .iter()
                        .map(|r| r.server.lock().unwrap_or_else(|p| p.into_inner()).addr)
                        .collect(),
                    next: AtomicUsize::new(0),
                    backend: Some(database.backend),
                    owned: Some(Owned {
                        replicas: started,
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

    /// How many replicas serve.
    pub fn replicas(&self) -> usize {
        self.addrs.len()
    }

    /// A new HTTP/2 connection to the orchestrator, to each replica in turn
    /// (each simulated client gets its own, as separate services would).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let addr = self.addrs[self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()];
        Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to the orchestrator at {addr}"))
    }

    /// The servers' process ids, as `/proc` names them (none unless
    /// spawned).
    pub fn pids(&self) -> Vec<&str> {
        self.owned
            .iter()
            .flat_map(|o| o.replicas.iter().map(|r| r.rss.pid()))
            .collect()
    }

    /// An error if the spawned server has exited.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        match &self.owned {
            Some(owned) => owned.replicas.iter().try_for_each(|r| {
                r.server
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .check_alive()
            }),
            None => Ok(()),
        }
    }

    /// Samples the spawned servers' memory (the largest replica's), stops
    /// them and removes their database (unless kept). Memory is unknown for a `--target`.
    pub async fn finish(self) -> anyhow::Result<Memory> {
        let Some(owned) = self.owned else {
            return Ok(Memory::default());
        };
        let mut memory = Memory::default();
        for replica in owned.replicas {
            memory = memory.max(replica.rss.finish());
            replica
                .server
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .stop();
        }
        owned.database.finish(owned.keep_database).await?;
        Ok(memory)
    }
}
