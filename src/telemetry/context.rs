//! W3C trace-context propagation: reading `traceparent` from incoming calls,
//! writing it into outgoing deliveries, and keeping it (as text) with each
//! instruction so that a delivery made later by any replica joins the trace
//! of the call that submitted the request.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads propagation fields from HTTP headers (incoming gRPC calls).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes propagation fields into gRPC metadata (outgoing calls).
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The `traceparent` of the current span, if it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    fields.remove("traceparent")
}

/// Parses a stored `traceparent` back into a (remote) span context.
fn span_context(traceparent: &str) -> Option<SpanContext> {
    let fields = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&fields));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Makes `span` part of the trace whose context was stored as
/// `traceparent` — as its child, so one request's whole history is one
/// trace — and links it there too, which keeps the connection visible in
/// backends that cut long-lived traces or sampled the parent out.
pub fn link_and_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(sc) = traceparent.and_then(span_context) else {
        return;
    };
    let parent = opentelemetry::Context::new().with_remote_span_context(sc.clone());
    let _ = span.set_parent(parent);
    span.add_link(sc);
}

/// The trace id of `span` (hex), when it belongs to a trace.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span's propagation fields (`traceparent`, ...) as HTTP
/// headers, for outgoing HTTP calls (webhooks).
pub fn trace_headers() -> Vec<(String, String)> {
    let cx = tracing::Span::current().context();
    let mut fields: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    fields.into_iter().collect()
}
