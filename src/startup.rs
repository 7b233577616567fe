//! Assembly: the one place that knows every part. [`Application::build`]
//! connects and migrates the store, loads the processors file, binds the
//! listeners and wires the dispatcher; [`Application::run_until_stopped`]
//! starts every background task, serves the gRPC services (with health and
//! reflection) and, at shutdown, stops each task in turn. `main` and the
//! integration tests build and run the very same thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminListener, AdminState};
use crate::api::in_flight::InFlightLayer;
use crate::api::limits::{LimitLayer, LimitSettings};
use crate::api::opendsr::OpenDsrCallbacks;
use crate::api::watch_limits::WatchLimits;
use crate::api::{InstructionApi, ProcessorApi, ProtectionApi, RequestApi};
use crate::auth::identify::Authenticator;
use crate::auth::layer::AuthLayer;
use crate::clock::Clock;
use crate::compliance_file::CompliancePolicy;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::dispatch::lookup::Lookup;
use crate::dispatch::opendsr::CallbackKeys;
use crate::dispatch::push::PushAdapters;
use crate::dispatch::recorder::{Recorder, RecorderTask};
use crate::domain::Period;
use crate::store::{Backend, ErasureSchedule, Store};
use crate::telemetry::Metrics;
use crate::tls::server::ServerTls;

mod background;
mod connections;
mod health;
mod options;
mod serve;
use background::Background;
pub use connections::{Calling, Conn, ConnHandle, max_connections};
pub use options::Options;
use serve::{Services, Transport, serve};

/// A built, not yet running, orchestrator.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    admin: AdminListener,
    metrics: Arc<Metrics>,
    store: Store,
    dispatcher: Dispatcher,
    /// The recorder's writing task, started with the others.
    recorder: RecorderTask,
    run_dispatcher: bool,
    clock: Arc<dyn Clock>,
    /// Identifies callers.
    auth: Arc<Authenticator>,
    /// The server's TLS, when it serves TLS.
    tls: Option<Arc<ServerTls>>,
    /// Listening beyond loopback without authentication.
    insecure: bool,
    /// How processors' names resolve (and whether push processors may be
    /// plaintext beyond loopback).
    lookup: Lookup,
    /// How often the TLS and auth files are checked for changes.
    reload_interval: Duration,
    /// Bounds on callers.
    limits: LimitSettings,
    /// The transport's bounds: largest message, streams per connection,
    /// connections open at once.
    transport: Transport,
    /// Deadlines and verification minimums.
    compliance: Arc<CompliancePolicy>,
    /// How long closed requests are kept, and how often the purge looks.
    retention: (Period, Duration),
    /// When finished requests' personal data is erased (`None`: the data
    /// protection task is off, [`Options::run_protection`]).
    protection: Option<ErasureSchedule>,
}

impl Application {
    /// Connects, migrates, loads processors and binds; fails with a readable
    /// message if any of it goes wrong.
    pub async fn build(config: &Config, options: Options) -> anyhow::Result<Self> {
        let clock = options.clock.clone();
        let erasure = ErasureSchedule::new(config.erase_interval, config.report_window);
        let metrics = Metrics::new(clock, &config.database_url, erasure)?;
        let built = Self::build_with(config, options, metrics.clone(), erasure).await;
        if built.is_err() {
            // Nothing was exported yet; shut the provider down quietly
            // rather than have its drop complain after the error.
            metrics.shutdown();
        }
        built
    }

    async fn build_with(
        config: &Config,
        options: Options,
        metrics: Arc<Metrics>,
        erasure: ErasureSchedule,
    ) -> anyhow::Result<Self> {
        config.check()?;
        let (keys, development_keys) = config.keyring()?;
        if let Some(path) = &development_keys {
            tracing::warn!(
                file = %path.display(),
                "sealing personal data with a development key kept beside the database; \
                 configure --keys-file for anything but trying the service out"
            );
        }
        let store_options = crate::store::StoreOptions {
            keys: Some(Arc::new(keys)),
            ..config.store_options()
        };
        let store = Store::connect(&config.database_url, &store_options)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {}",
                    crate::store::redact_url(&config.database_url)
                )
            })?
            .with_observer(metrics.clone());
        let compliance = Arc::new(config.compliance()?);
        if config.record_retention.before(options.clock.now())
            > crate::domain::Period::Months(24).before(options.clock.now())
        {
            tracing::warn!(
                retention = %config.record_retention,
                "records are kept less than the 24 months CCPA regs 7101 ask"
            );
        }
        let chained = store
            .chain_unchained()
            .await
            .context("cannot chain the audit trails of earlier requests")?;
        if chained > 0 {
            tracing::info!(
                requests = chained,
                "chained the audit trails of earlier requests"
            );
        }
        match store.backend() {
            Backend::Sqlite => tracing::info!(
                file = %store.location(),
                "keeping data in SQLite (one process; use PostgreSQL for several replicas)"
            ),
            Backend::Postgres => {
                tracing::info!(database = %store.location(), "keeping data in PostgreSQL")
            }
        }
        let lookup = options.lookup(config.allow_plaintext_processors);
        if let Some(path) = &config.processors_file {
            let now = options.clock.now();
            let count = crate::processors_file::apply(path, &store, &lookup, now).await?;
            tracing::info!(count, file = %path.display(), "processors loaded");
        }
        let auth = Arc::new(
            Authenticator::load(store.clone(), config.auth_file.clone())
                .await
                .context("cannot set up authentication")?,
        );
        let insecure = auth.is_open() && !config.listen.ip().is_loopback();
        if insecure && !config.insecure_no_auth {
            anyhow::bail!(
                "listening on {} without authentication would let anyone on the network order \
                 deletions and read every request: configure principals with --auth-file \
                 (DSR_AUTH_FILE; see docs/security.md), listen on loopback, or run with \
                 --insecure-no-auth to accept the risk",
                config.listen
            );
        }
        if insecure {
            tracing::warn!(
                listen = %config.listen,
                "--insecure-no-auth: callers are not authenticated; anyone who reaches the port \
                 can do anything but speak for a processor"
            );
        }
        let tls = config
            .tls_files()
            .map(ServerTls::load)
            .transpose()
            .context("cannot set up the server's TLS")?
            .map(|tls| match options.max_handshakes {
                Some(most) => tls.with_max_handshakes(most),
                None => tls,
            })
            .map(Arc::new);
        tracing::info!(
            tls = match &tls {
                None => "off",
                Some(t) if t.mutual() => "mutual (client certificates required)",
                Some(_) => "on",
            },
            authentication = match &config.auth_file {
                Some(file) => format!("principals from {}", file.display()),
                None if insecure => "none (--insecure-no-auth)".to_string(),
                None => "none (listening on loopback only)".to_string(),
            },
            "security"
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let admin = AdminListener::bind(config)
            .await?
            .with_limits(options.admin_limits);
        let (recorder, recorder_task) = Recorder::new(store.clone(), options.clock.clone());
        let dispatcher = Dispatcher::new(
            store.clone(),
            options.clock.clone(),
            options.adapter.unwrap_or_else(|| {
                Arc::new(PushAdapters::new(config.public_url.clone(), lookup.clone()))
            }),
            recorder,
            config.dispatch_config(),
            metrics.clone(),
        );
        // Made here, so /metrics shows its bound before the listener serves.
        let most = config.max_connections.unwrap_or_else(max_connections);
        let connections = connections::Connections::new(most, metrics.connections());
        Ok(Self {
            listener,
            addr,
            admin,
            metrics,
            store,
            dispatcher,
            recorder: recorder_task,
            run_dispatcher: options.run_dispatcher,
            clock: options.clock,
            auth,
            tls,
            insecure,
            lookup,
            reload_interval: config.reload_interval,
            limits: config.limits(),
            transport: Transport {
                max_message_size: config.max_message_size as usize,
                max_concurrent_streams: config.max_concurrent_streams,
                connections,
            },
            compliance,
            retention: (config.record_retention, config.purge_interval),
            protection: options.run_protection.then_some(erasure),
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin (HTTP) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.addr()
    }

    /// The store (tests inspect it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The dispatcher (tests drive it with `run_once`).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Serves until `shutdown` fires, then stops accepting calls, stops
    /// every background task in turn and closes the store.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            addr,
            admin: admin_listener,
            metrics,
            store,
            dispatcher,
            recorder,
            run_dispatcher,
            clock,
            auth,
            tls,
            insecure,
            lookup,
            reload_interval,
            limits,
            transport,
            compliance,
            retention,
            protection,
        } = self;
        // Every moving part, in the order it starts; they stop in the
        // reverse order, each after the ones that feed it.
        let mut tasks = Background::default();
        // SQLite: copies the write-ahead log back, beside the one writer.
        tasks.start("checkpointer", |stop| store.checkpointer(stop));
        // PostgreSQL: other replicas' commits wake this one's dispatcher
        // and watchers, and this one's commits are published to them.
        tasks.start("notice listener", |stop| store.notice_listener(stop));
        tasks.start("notice publisher", |stop| store.notice_publisher(stop));
        // Rereads the auth file and the JWKS when they change.
        tasks.start("auth reloader", |stop| {
            Some(auth.clone().reloader(reload_interval, stop))
        });
        // Rereads the server's certificates when they change.
        tasks.start("TLS reloader", |stop| {
            tls.clone().map(|tls| tls.reloader(reload_interval, stop))
        });
        // Group-commits submissions: `SubmitRequest` waits for it.
        tasks.start("intake writer", |stop| Some(store.intake_writer(stop)));
        // Writes delivery results in batches: deliveries wait for it.
        tasks.start("recorder", |stop| Some(recorder.run(stop)));
        // Claims and delivers; when stopped, drains its deliveries.
        if run_dispatcher {
            tasks.start("dispatcher", |stop| Some(dispatcher.clone().run(stop)));
        }
        // Reseals what is not under the active key, then erases finished
        // requests' personal data.
        tasks.start("data protection", |stop| {
            protection.map(|schedule| store.protector(schedule, clock.clone(), stop))
        });
        // Purges closed requests past their retention period.
        tasks.start("retention purge", |stop| {
            Some(store.purger(retention.0, retention.1, clock.clone(), stop))
        });
        // Keeps the open-work gauges fresh for OTLP push.
        tasks.start("metrics refresher", |stop| {
            metrics.refresher(store.clone(), clock.clone(), Duration::from_secs(15), stop)
        });
        // `/metrics`, `/healthz`, `/readyz`.
        let admin = AdminState {
            store: store.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            dispatcher: run_dispatcher.then(|| dispatcher.clone()),
            insecure,
        };
        let (admin_addr, admin_tls) = (admin_listener.addr(), admin_listener.tls());
        let serve_admin = |stop| admin::serve(admin_listener, admin, reload_interval, stop);
        tasks.start("admin listener", |stop| Some(serve_admin(stop)));

        tracing::info!(
            addr = %addr,
            admin = %admin_addr,
            admin_tls,
            backend = store.backend().as_str(),
            "serving gRPC"
        );
        let services = Services {
            requests: RequestApi {
                store: store.clone(),
                clock: clock.clone(),
                shutdown: shutdown.clone(),
                metrics: metrics.clone(),
                watches: WatchLimits::new(limits),
                compliance,
            },
            processors: ProcessorApi {
                store: store.clone(),
                clock: clock.clone(),
                lookup: lookup.clone(),
            },
            instructions: InstructionApi {
                store: store.clone(),
                clock: clock.clone(),
            },
            protection: ProtectionApi {
                store: store.clone(),
                clock: clock.clone(),
            },
            opendsr: OpenDsrCallbacks {
                instructions: InstructionApi {
                    store: store.clone(),
                    clock: clock.clone(),
                },
                store: store.clone(),
                keys: Arc::new(CallbackKeys::new(lookup, clock.clone())),
                metrics: metrics.clone(),
            },
        };
        let layers = (
            InFlightLayer::new(limits.calls_in_flight, limits.stalled_reader),
            AuthLayer::new(auth),
            LimitLayer::new(limits),
        );
        let served = serve(listener, tls, layers, transport, services, shutdown).await;
        tracing::info!("gRPC server stopped; stopping the background tasks");
        tasks.stop().await;
        metrics.shutdown();
        store.close().await;
        served.context("gRPC server failed")
    }
}
