//! Telemetry: structured logs, OpenTelemetry traces and metrics.
//!
//! - **Logs** go to stdout, human-readable or JSON (`--log-format`),
//!   filtered by `RUST_LOG` (default `info`). Lines written inside an RPC
//!   carry its `trace_id`.
//! - **Traces** are exported by OTLP/gRPC when an endpoint is configured by
//!   the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME`,
//!   `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`, ... are honoured by the
//!   SDK), and are off otherwise. Context travels as W3C `traceparent`.
//! - **Metrics** ([`Metrics`]) are served for Prometheus on the admin
//!   listener and optionally pushed by OTLP.
//!
//! Spans and metric labels carry only identifiers we minted or validated
//! (request, instruction and processor ids; kinds, states, codes), never a
//! subject's data.

mod connections;
mod context;
mod families;
mod gauges;
mod metrics;
mod rpc;

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use connections::{ConnectionClosed, ConnectionStats};
pub use context::{
    MetadataInjector, current_traceparent, link_and_parent, trace_headers, trace_id_of,
};
pub use metrics::Metrics;
pub use rpc::RpcTraceLayer;

/// Log output format (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The service name used when `OTEL_SERVICE_NAME` is not set.
pub const SERVICE_NAME: &str = "dsr-orchestrator";

/// Keeps the exporters alive; flush them before exit with [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing_exported(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports every finished span now.
    pub fn force_flush(&self) {
        if let Some(p) = &self.tracer_provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "could not flush spans");
        }
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(self) {
        if let Some(p) = self.tracer_provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("dsr-orchestrator: could not flush spans at exit: {e}");
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the environment asks for OTLP export of `signal` ("TRACES" or
/// "METRICS").
pub(crate) fn otlp_enabled(signal: &str) -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var(format!("OTEL_{signal}_EXPORTER"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

/// The OpenTelemetry resource: `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`
/// when set, else service name `dsr-orchestrator`.
pub(crate) fn resource() -> Resource {
    let builder = Resource::builder();
    if env_set("OTEL_SERVICE_NAME") {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// Installs logging and, when configured, trace export. Call once, inside
/// the Tokio runtime; later calls only return another handle.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Spans always get OpenTelemetry trace context, so trace ids, the W3C
    // propagation to processors and the context stored with instructions
    // work the same whether or not anything is exported; "off" only means
    // no exporter.
    let mut builder = SdkTracerProvider::builder().with_resource(resource());
    let exported = otlp_enabled("TRACES");
    if exported {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("cannot set up the OTLP span exporter")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    // Spans carry the fields we give them and nothing per poll: tracking
    // busy and idle time reads the clock at every enter and exit of every
    // instrumented future, and the thread and source-location attributes
    // are allocated for every span; together they cost about 2 % of the
    // server's instructions per fanned-out instruction (counted with
    // callgrind) and say nothing an operator needs.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_tracer(provider.tracer(SERVICE_NAME));
    let tracer_provider = exported.then_some(provider);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (text, json) = match format {
        LogFormat::Text => (
            Some(tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal())),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    // Every enclosing span's fields, so each line written
                    // while serving a call carries the rpc span's trace_id.
                    .with_span_list(true),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel_layer)
        .try_init();
    Ok(Telemetry { tracer_provider })
}
