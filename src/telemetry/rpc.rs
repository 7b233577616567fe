//! One server span per RPC, as a tower layer around every gRPC service.
//!
//! The span continues the caller's trace when the call carries a W3C
//! `traceparent`, and records the trace id as a field, so every log line
//! written while serving the call — by the handler, the store, anything
//! below — carries it, whether or not spans are exported.

use std::task::{Context, Poll};

use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::context::{HeaderExtractor, trace_id_of};

/// Wraps services in [`RpcTrace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcTraceLayer;

impl<S> Layer<S> for RpcTraceLayer {
    type Service = RpcTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTrace { inner }
    }
}

/// A service that runs each call inside an `rpc` span.
#[derive(Clone, Debug)]
pub struct RpcTrace<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RpcTrace<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The path names the method; anything that does not look like
        // "/package.Service/Method" is not recorded (a client could put
        // anything there).
        let raw = req.uri().path();
        let path = if raw.len() <= 128
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_'))
        {
            raw
        } else {
            "/unknown/unknown"
        };
        // "/dsr.v1.RequestService/SubmitRequest" -> service, method.
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            trace_id = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        let incoming = parent.span().span_context().clone();
        // Without the OpenTelemetry layer (no exporter) this is a no-op.
        let _ = span.set_parent(parent);
        let trace_id = trace_id_of(&span)
            .or_else(|| incoming.is_valid().then(|| incoming.trace_id().to_string()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        span.record("trace_id", trace_id.as_str());
        self.inner.call(req).instrument(span)
    }
}
