//! The application under test, built exactly as `main` builds it, on a free
//! port, with clients for every service.

use std::net::SocketAddr;
use std::time::Duration;

use dsr_orchestrator::config::Config;
use dsr_orchestrator::dispatch::{Dispatcher, QUEUING_SUBMISSIONS};
use dsr_orchestrator::in_progress::Counted;
use dsr_orchestrator::pb::instruction_service_client::InstructionServiceClient;
use dsr_orchestrator::pb::processor_service_client::ProcessorServiceClient;
use dsr_orchestrator::pb::request_service_client::RequestServiceClient;
use dsr_orchestrator::startup::{Application, Options};
use dsr_orchestrator::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

use super::TestDb;

/// Puts `authorization: Bearer <token>` on every call, when it has one.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Calls with `token`.
    pub fn token(token: &str) -> Self {
        Self(Some(
            format!("Bearer {token}").parse().expect("a header value"),
        ))
    }

    /// The `authorization` header it sends, if any.
    pub fn header(&self) -> Option<&str> {
        self.0.as_ref().and_then(|v| v.to_str().ok())
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0
            && !request.metadata().contains_key("authorization")
        {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a bearer token, or none.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Clients of the three services, as one caller.
#[derive(Clone)]
pub struct Clients {
    pub requests: RequestServiceClient<Authed>,
    pub processors: ProcessorServiceClient<Authed>,
    pub instructions: InstructionServiceClient<Authed>,
}

impl Clients {
    /// Clients on `channel` calling with `bearer`.
    pub fn new(channel: Channel, bearer: Bearer) -> Self {
        Self {
            requests: RequestServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            processors: ProcessorServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            instructions: InstructionServiceClient::with_interceptor(channel, bearer),
        }
    }
}

/// The token of the harness's own principal on servers that authenticate
/// callers: every role, so the fixtures work as on an open server.
pub const HARNESS_TOKEN: &str = "harness-token-with-every-role";

/// A running orchestrator and clients for it.
pub struct TestApp {
    /// The gRPC listener.
    pub addr: SocketAddr,
    /// The admin (HTTP) listener.
    pub admin: SocketAddr,
    pub requests: RequestServiceClient<Authed>,
    pub processors: ProcessorServiceClient<Authed>,
    pub instructions: InstructionServiceClient<Authed>,
    pub store: Store,
    pub dispatcher: Dispatcher,
    /// The channel the clients use.
    channel: Channel,
    /// Holds the auth file of a server that authenticates callers.
    _auth_dir: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The SHA-256 (hex) of a token, as the auth file lists it.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An auth file: the harness's principal first, then `rest`, which may
/// continue the `tokens:` list and add sections.
pub fn harness_auth_file(rest: &str) -> String {
    format!(
        "tokens:\n  - principal: harness\n    sha256: {}\n    roles: [submitter, auditor, operator, admin]\n{rest}",
        token_hash(HARNESS_TOKEN)
    )
}

/// The keys every server of this test process seals with (replicas and
/// restarts of one database share them).
pub static TEST_KEYS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| dsr_orchestrator::seal::Keyring::generate("test"));

/// Test defaults: fast polling and short leases, so retries and
/// redeliveries happen within a test's lifetime; the tests' keys.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::for_tests(&db.url);
    config.keys = Some(TEST_KEYS.clone());
    // Erasure runs at start and then hourly: tests that want it sooner say so.
    config.erase_interval = Duration::from_secs(3600);
    config.poll_interval = Duration::from_millis(50);
    config.lease_margin = Duration::from_secs(2);
    config.drain_timeout = Duration::from_secs(5);
    config.db_max_connections = 8;
    config
}

/// A TLS channel to `addr` (as `localhost`).
pub async fn tls_channel(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
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
        Self::spawn_inner(db, options, tweak, None).await
    }

    /// Starts it serving TLS (set up by `tweak`), its clients connecting
    /// with `client` (trusting the server's CA; with a certificate for
    /// mutual TLS).
    pub async fn spawn_tls(
        db: &TestDb,
        tweak: impl FnOnce(&mut Config),
        client: ClientTlsConfig,
    ) -> Self {
        Self::spawn_inner(db, Options::default(), tweak, Some(client)).await
    }

    /// [`TestApp::spawn_tls`] with these options.
    pub async fn spawn_tls_with(
        db: &TestDb,
        options: Options,
        tweak: impl FnOnce(&mut Config),
        client: ClientTlsConfig,
    ) -> Self {
        Self::spawn_inner(db, options, tweak, Some(client)).await
    }

    async fn spawn_inner(
        db: &TestDb,
        options: Options,
        tweak: impl FnOnce(&mut Config),
        client_tls: Option<ClientTlsConfig>,
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
        let ch = match client_tls {
            Some(tls) => tls_channel(addr, tls).await.expect("connect over TLS"),
            None => channel(addr).await,
        };
        let bearer = if config.auth_file.is_some() {
            Bearer::token(HARNESS_TOKEN)
        } else {
            Bearer::default()
        };
        let clients = Clients::new(ch.clone(), bearer);
        Self {
            addr,
            admin,
            requests: clients.requests,
            processors: clients.processors,
            instructions: clients.instructions,
            store,
            dispatcher,
            channel: ch,
            _auth_dir: None,
            shutdown,
            task,
        }
    }

    /// Starts it authenticating callers with an auth file made of
    /// `principals` (YAML entries of its `tokens:` list, and any other
    /// sections after them) plus the harness's own principal, which the
    /// default clients use.
    pub async fn spawn_authenticated(
        db: &TestDb,
        auth_yaml: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.yaml");
        std::fs::write(&path, harness_auth_file(auth_yaml)).expect("write the auth file");
        let mut app = Self::spawn_with(db, Options::default(), |c| {
            c.auth_file = Some(path);
            tweak(c);
        })
        .await;
        app._auth_dir = Some(dir);
        app
    }

    /// The auth file of [`TestApp::spawn_authenticated`], for rewriting.
    pub fn auth_file(&self) -> std::path::PathBuf {
        self._auth_dir
            .as_ref()
            .expect("an authenticating server")
            .path()
            .join("auth.yaml")
    }

    /// The channel to the server (plaintext).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Clients calling as `bearer`.
    pub fn clients(&self, bearer: Bearer) -> Clients {
        Clients::new(self.channel.clone(), bearer)
    }

    /// This replica's `dsr_dispatch_passes_total`.
    pub async fn passes(&self) -> u64 {
        self.sample("dsr_dispatch_passes_total").await as u64
    }

    /// The value of `series` (a name with its labels, as the text format
    /// writes them) on this replica's `/metrics`.
    pub async fn sample(&self, series: &str) -> f64 {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{text}"))
    }

    /// As many submissions counted in progress as make deliveries yield
    /// to intake, until the guards drop: callers queuing, without calls.
    pub fn callers_queuing(&self) -> Vec<Counted> {
        (0..QUEUING_SUBMISSIONS)
            .map(|_| self.store.submission_started())
            .collect()
    }

    /// A pass run by hand (`run_once`) on a task of its own, so the test
    /// can act while the pass waits for its deliveries; yields how many it
    /// claimed.
    pub fn spawn_pass(&self) -> JoinHandle<usize> {
        let dispatcher = self.dispatcher.clone();
        tokio::spawn(async move { dispatcher.run_once().await.unwrap() })
    }

    /// Waits until the dispatcher has made two more passes than now: a
    /// check that nothing was sent made after it had two chances to send.
    pub async fn two_more_passes(&self) {
        let target = self.passes().await + 2;
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while self.passes().await < target {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the dispatcher stopped passing");
    }

    /// `GET path` on the admin listener: (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let stream = tokio::net::TcpStream::connect(self.admin)
            .await
            .expect("admin listener");
        http_get(stream, &self.admin.to_string(), path, None)
            .await
            .expect("HTTP response")
    }

    /// The token [`TestApp::stop`] cancels: a test waits on it to know
    /// the server has begun to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("clean shutdown");
    }
}

/// `GET path` over `stream` with HTTP/1.0 (close-delimited, never
/// chunked), with `Authorization: Bearer <bearer>` when given: (status
/// code, body), or `None` when what came back is no HTTP response.
pub async fn http_get(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    path: &str,
    bearer: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    // A peer that closes without TLS's close_notify still said what it had.
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_string()))
}
