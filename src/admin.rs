//! The admin listener: plain HTTP, separate from the gRPC port so that it
//! can be exposed to the cluster's monitoring while gRPC stays private.
//!
//! - `/metrics`: every metric in the Prometheus text format.
//! - `/healthz`: the process is alive (always 200 while it serves).
//! - `/readyz`: 200 when the database answers (migrations ran before the
//!   listener opened) and the dispatcher loop is turning; 503 with the
//!   reason otherwise. Load balancers stop sending calls to a replica that
//!   lost its database and send them again when it comes back.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::telemetry::Metrics;

/// How long `/readyz` waits for the database.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    // As on the gRPC listener: a response written in pieces is not held
    // back by Nagle's algorithm waiting for the scraper's acknowledgement.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an admin connection");
        }
    });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the admin listener failed");
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    match s.metrics.render(&s.store, s.clock.as_ref()).await {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot render metrics");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics unavailable: database unreachable\n",
            )
                .into_response()
        }
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match tokio::time::timeout(DB_CHECK_TIMEOUT, s.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: database unreachable\n",
            );
        }
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
