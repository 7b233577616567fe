//! Assembly: the one place that knows every part. [`Application::build`]
//! connects and migrates the store, loads the processors file, binds the
//! listener, and wires the gRPC services, health, reflection and the
//! dispatcher; `main` and the integration tests build the very same thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::admin::AdminState;
use crate::api::{InstructionApi, ProcessorApi, RequestApi};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::dispatch::adapter::Adapter;
use crate::dispatch::grpc::GrpcAdapter;
use crate::pb;
use crate::store::Store;
use crate::telemetry::{Metrics, RpcTraceLayer};

/// What tests may swap out.
pub struct Options {
    /// The source of "now".
    pub clock: Arc<dyn Clock>,
    /// Run the dispatcher loop in the background (tests that drive it by
    /// hand with [`Dispatcher::run_once`] turn this off).
    pub run_dispatcher: bool,
    /// How instructions reach push processors.
    pub adapter: Arc<dyn Adapter>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            run_dispatcher: true,
            adapter: Arc::new(GrpcAdapter::default()),
        }
    }
}

/// A built, not yet running, orchestrator.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    store: Store,
    dispatcher: Dispatcher,
    run_dispatcher: bool,
    clock: Arc<dyn Clock>,
}

impl Application {
    /// Connects, migrates, loads processors and binds; fails with a readable
    /// message if any of it goes wrong.
    pub async fn build(config: &Config, options: Options) -> anyhow::Result<Self> {
        let metrics = Metrics::new(options.clock.clone())?;
        let store = Store::connect(&config.database_url, &config.store_options())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database ({})",
                    redact_url(&config.database_url)
                )
            })?
            .with_observer(metrics.clone());
        if let Some(path) = &config.processors_file {
            // The loader's errors already name the file and the line.
            let specs = crate::processors_file::load(path)?;
            let now = options.clock.now();
            for spec in &specs {
                store.upsert_processor(spec, now).await.with_context(|| {
                    format!("cannot store processor {} from {}", spec.id, path.display())
                })?;
            }
            tracing::info!(count = specs.len(), file = %path.display(), "processors loaded");
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let dispatcher = Dispatcher::new(
            store.clone(),
            options.clock.clone(),
            options.adapter,
            config.dispatch_config(),
            metrics.clone(),
        );
        Ok(Self {
            listener,
            addr,
            admin_listener,
            admin_addr,
            metrics,
            store,
            dispatcher,
            run_dispatcher: options.run_dispatcher,
            clock: options.clock,
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin (HTTP) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The store (tests inspect it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The dispatcher (tests drive it with `run_once`).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Serves until `shutdown` fires, then stops accepting calls, drains the
    /// dispatcher and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<pb::request_service_server::RequestServiceServer<RequestApi>>()
            .await;
        health_reporter
            .set_serving::<pb::processor_service_server::ProcessorServiceServer<ProcessorApi>>()
            .await;
        health_reporter
            .set_serving::<pb::instruction_service_server::InstructionServiceServer<InstructionApi>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let request_api = RequestApi {
            store: self.store.clone(),
            clock: self.clock.clone(),
            dispatcher: self.dispatcher.clone(),
            shutdown: shutdown.clone(),
            metrics: self.metrics.clone(),
        };
        let processor_api = ProcessorApi {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };
        let instruction_api = InstructionApi {
            store: self.store.clone(),
            clock: self.clock.clone(),
        };

        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(crate::admin::serve(
            self.admin_listener,
            AdminState {
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                clock: self.clock.clone(),
                dispatcher: self.run_dispatcher.then(|| self.dispatcher.clone()),
            },
            admin_stop.clone(),
        ));
        self.metrics.spawn_refresher(
            self.store.clone(),
            self.clock.clone(),
            Duration::from_secs(15),
        );

        let dispatcher_stop = CancellationToken::new();
        let dispatcher_task = self
            .run_dispatcher
            .then(|| tokio::spawn(self.dispatcher.clone().run(dispatcher_stop.clone())));

        tracing::info!(
            addr = %self.addr,
            admin = %self.admin_addr,
            backend = self.store.backend().as_str(),
            "serving gRPC"
        );
        // Small messages, many calls: don't wait to batch packets. Set on
        // the incoming stream itself: the builder's `tcp_nodelay` is
        // ignored for a listener of our own, and with Nagle on, a reply
        // waited for the client's delayed ACK (40 ms on Linux).
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let served = Server::builder()
            // Detect dead peers (and half-open watch streams) within a minute.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            // One span per RPC, continuing the caller's W3C trace; outermost,
            // so everything below (health and reflection too) runs inside it.
            .layer(RpcTraceLayer)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(pb::request_service_server::RequestServiceServer::new(
                request_api,
            ))
            .add_service(pb::processor_service_server::ProcessorServiceServer::new(
                processor_api,
            ))
            .add_service(
                pb::instruction_service_server::InstructionServiceServer::new(instruction_api),
            )
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
            .await;
        tracing::info!("gRPC server stopped; draining the dispatcher");
        dispatcher_stop.cancel();
        if let Some(task) = dispatcher_task {
            let _ = task.await;
        }
        admin_stop.cancel();
        let _ = admin.await;
        self.metrics.shutdown();
        self.store.close().await;
        served.context("gRPC server failed")
    }
}

/// A database URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact_url("postgres://dsr:secret@db:5432/dsr"),
            "postgres://dsr:***@db:5432/dsr"
        );
        assert_eq!(super::redact_url("sqlite://dsr.db"), "sqlite://dsr.db");
    }
}
