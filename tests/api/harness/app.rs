//! The application under test, built exactly as `main` builds it, on a free
//! port, with clients for every service.

use std::net::SocketAddr;
use std::time::Duration;

use dsr_orchestrator::config::Config;
use dsr_orchestrator::dispatch::Dispatcher;
use dsr_orchestrator::pb::instruction_service_client::InstructionServiceClient;
use dsr_orchestrator::pb::processor_service_client::ProcessorServiceClient;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use dsr_orchestrator::startup::{Application, Options};
use dsr_orchestrator::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::TestDb;

/// A running orchestrator and clients for it.
pub struct TestApp {
    /// The gRPC listener.
    pub addr: SocketAddr,
    /// The admin (HTTP) listener.
    pub admin: SocketAddr,
    pub requests: RequestServiceClient<Channel>,
    pub processors: ProcessorServiceClient<Channel>,
    pub instructions: InstructionServiceClient<Channel>,
    pub store: Store,
    pub dispatcher: Dispatcher,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Test defaults: fast polling and short leases, so retries and
/// redeliveries happen within a test's lifetime.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::for_tests(&db.url);
    config.poll_interval = Duration::from_millis(50);
    config.lease_margin = Duration::from_secs(2);
    config.drain_timeout = Duration::from_secs(5);
    config.db_max_connections = 8;
    config
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the orchestrator")
}

impl TestApp {
    /// Starts the orchestrator with its background dispatcher.
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(db, Options::default(), |_| {}).await
    }

    /// Starts it without its background dispatcher (tests that drive it
    /// by hand, or a replica that only takes calls).
    pub async fn spawn_without_dispatcher(db: &TestDb) -> Self {
        let options = Options {
            run_dispatcher: false,
            ..Options::default()
        };
        Self::spawn_with(db, options, |_| {}).await
    }

    /// Starts it with custom options and configuration.
    pub async fn spawn_with(
        db: &TestDb,
        options: Options,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config(db);
        tweak(&mut config);
        let app = Application::build(&config, options)
            .await
            .expect("build application");
        let addr = app.addr();
        let admin = app.admin_addr();
        let store = app.store().clone();
        let dispatcher = app.dispatcher().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let ch = channel(addr).await;
        Self {
            addr,
            admin,
            requests: RequestServiceClient::new(ch.clone()),
            processors: ProcessorServiceClient::new(ch.clone()),
            instructions: InstructionServiceClient::new(ch),
            store,
            dispatcher,
            shutdown,
            task,
        }
    }

    /// `GET path` on the admin listener: (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("admin listener");
        // HTTP/1.0: the answer is close-delimited, never chunked.
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, body.to_string())
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("clean shutdown");
    }
}
