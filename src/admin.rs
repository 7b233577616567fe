//! The admin listener: HTTP/1.1, separate from the gRPC port so that it
//! can be exposed to the cluster's monitoring while gRPC stays private.
//! With `--admin-tls` it serves TLS with the gRPC port's certificate
//! (reloaded with it), so that scrapes cross the network encrypted like
//! every other hop; it asks for no client certificate, since Kubernetes
//! probes present none. With `--metrics-token-file`, `/metrics` answers
//! only a scraper that presents the file's bearer token, read again at
//! every scrape so that a rotated Secret takes effect without a restart;
//! the probes stay open, as the kubelet calls them without credentials and
//! they tell nothing but whether the replica serves.
//!
//! - `/metrics`: every metric in the Prometheus text format.
//! - `/healthz`: the process is alive (always 200 while it serves).
//! - `/readyz`: 200 when the database answers (migrations ran before the
//!   listener opened) and the dispatcher loop is turning; 503 with the
//!   reason otherwise. Load balancers stop sending calls to a replica that
//!   lost its database and send them again when it comes back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::auth::identify::bearer;
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tls::server::{ACCEPT_PAUSE, ServerTls};

pub mod connections;

pub use connections::AdminLimits;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The database.
    pub store: Store,
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// For the age gauges.
    pub clock: Arc<dyn Clock>,
    /// `Some` when this replica runs a dispatcher whose liveness counts.
    pub dispatcher: Option<Dispatcher>,
    /// Serving beyond loopback without authentication
    /// (`--insecure-no-auth`): said in every `/readyz` answer.
    pub insecure: bool,
}

/// The admin listener, bound, with its TLS and the metrics token's file.
pub struct AdminListener {
    tcp: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    metrics_token: Option<Arc<PathBuf>>,
    limits: AdminLimits,
}

impl AdminListener {
    /// Binds `--admin-listen`, loads the TLS of `--admin-tls` and reads the
    /// token of `--metrics-token-file`, so that a mistake in either stops
    /// the start with a message naming the file.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let tls = match (config.admin_tls, config.tls_files()) {
            (false, _) => None,
            (true, None) => anyhow::bail!("--admin-tls needs --tls-cert and --tls-key"),
            (true, Some(files)) => Some(Arc::new(
                ServerTls::load_admin(files).context("cannot set up the admin listener's TLS")?,
            )),
        };
        if let Some(path) = &config.metrics_token_file {
            read_token(path).await.context("--metrics-token-file")?;
            if tls.is_none() && !config.admin_listen.ip().is_loopback() {
                tracing::warn!(
                    admin = %config.admin_listen,
                    "--metrics-token-file without --admin-tls: scrapers send the token in the clear"
                );
            }
        }
        let tcp = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        Ok(Self {
            addr: tcp.local_addr()?,
            tcp,
            tls,
            metrics_token: config.metrics_token_file.clone().map(Arc::new),
            limits: AdminLimits::default(),
        })
    }

    /// The same listener, its connections held within `limits`.
    pub fn with_limits(self, limits: AdminLimits) -> Self {
        Self { limits, ..self }
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves TLS (`--admin-tls`).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Serves the admin endpoints on `listener` until `shutdown`, reading its
/// TLS files again every `reload_interval`.
pub async fn serve(
    listener: AdminListener,
    state: AdminState,
    reload_interval: Duration,
    shutdown: CancellationToken,
) {
    let limits = listener.limits;
    let token = listener.metrics_token;
    let app = Router::new()
        .route(
            "/metrics",
            get(move |s: State<AdminState>, headers: HeaderMap| metrics(s, headers, token.clone())),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    match listener.tls {
        Some(tls) => {
            // Only the connections whose handshake succeeded; the stream
            // ends when the accepting task stops at shutdown.
            let conns = tls
                .clone()
                .incoming(listener.tcp, shutdown.clone())
                .filter_map(|conn| conn.ok());
            // The certificate is read again while the listener serves,
            // and both stop at shutdown.
            let reloading = tls.reloader(reload_interval, shutdown.clone());
            let serving = connections::serve(conns, app, limits, shutdown);
            tokio::join!(reloading, serving);
        }
        None => {
            let conns = futures::stream::unfold(listener.tcp, |tcp| async move {
                let conn = accept(&tcp).await;
                Some((conn, tcp))
            });
            connections::serve(conns, app, limits, shutdown).await;
        }
    }
}

/// The next plaintext connection. As on the gRPC listener, a response
/// written in pieces is not held back by Nagle's algorithm waiting for the
/// scraper's acknowledgement.
async fn accept(tcp: &TcpListener) -> TcpStream {
    loop {
        match tcp.accept().await {
            Ok((conn, _)) => {
                if let Err(e) = conn.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY on an admin connection");
                }
                return conn;
            }
            // Out of descriptors, or a connection reset before it was
            // taken: the next try is a moment away, not a busy loop.
            Err(e) => {
                tracing::warn!(error = %e, "the admin listener cannot accept a connection");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}

/// The token in `path`: its one word, surrounding whitespace (a trailing
/// newline) taken off.
async fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(|c: char| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "{} must hold one token, without spaces or control characters",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// Whether `headers` carry `Authorization: Bearer <expected>`. The tokens
/// are compared by their SHA-256, so the comparison's time says nothing
/// about how much of a guess was right.
fn presents(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|given| Sha256::digest(given) == Sha256::digest(expected))
}

async fn metrics(
    State(s): State<AdminState>,
    headers: HeaderMap,
    token: Option<Arc<PathBuf>>,
) -> Response {
    if let Some(path) = token {
        match read_token(&path).await {
            Ok(expected) if presents(&headers, &expected) => {}
            Ok(_) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                    "the metrics need the bearer token of --metrics-token-file\n",
                )
                    .into_response();
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the metrics token; refusing scrapes");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metrics unavailable: the metrics token cannot be read\n",
                )
                    .into_response();
            }
        }
    }
    match s.metrics.render(&s.store, s.clock.as_ref()).await {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics unavailable: they cannot be encoded\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if !s.store.answers().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database unreachable\n",
        );
    }
    if let Some(d) = &s.dispatcher
        && !d.is_turning()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: dispatcher stalled\n",
        );
    }
    if s.insecure {
        return (
            StatusCode::OK,
            "ready (insecure: callers are not authenticated, --insecure-no-auth)\n",
        );
    }
    (StatusCode::OK, "ready\n")
}
