//! Metrics, through OpenTelemetry: served for Prometheus scraping on the
//! admin listener (`/metrics`), and pushed by OTLP when
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (or `..._ENDPOINT`) is set.
//!
//! Every label set is bounded: kinds, jurisdictions, outcomes, states, gRPC
//! codes and processor ids (a registry of tens, chosen by operators) — never
//! a request id or anything about a subject. Counters and histograms are
//! fed as things happen (the API, the dispatcher, and the store's observer
//! hook after each commit); the gauges of open work are read from the
//! database when scraped, so every replica reports the same shared truth.
//! New families (deadlines, circuit breakers) add instruments here with the
//! same label vocabulary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{AttemptResult, InstructionState, InstructionView};
use crate::store::{ClaimKind, ClosedRequest, Stats, Store, StoreObserver};

/// Bucket bounds (seconds) for delivery and claim latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds (seconds) for time to acknowledge: milliseconds to days.
const ACK_BUCKETS: &[f64] = &[
    0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, 604800.0,
];

/// The instruments, and the registry Prometheus reads.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    /// The gauges' values, refreshed from the database before each scrape.
    snapshot: Arc<Mutex<Stats>>,
    requests_submitted: Counter<u64>,
    requests_completed: Counter<u64>,
    instructions_finished: Counter<u64>,
    escalations: Counter<u64>,
    claimed: Counter<u64>,
    delivery_attempts: Counter<u64>,
    delivery_failures: Counter<u64>,
    cancel_notices: Counter<u64>,
    breaker_changes: Counter<u64>,
    delivery_duration: Histogram<f64>,
    time_to_acknowledge: Histogram<f64>,
    claim_duration: Histogram<f64>,
    dispatch_yields: Counter<u64>,
}

impl Metrics {
    /// Creates the instruments. `clock` dates the age gauges.
    pub fn new(clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Self>> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .context("cannot set up the Prometheus exporter")?;
        let mut builder = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(super::resource());
        if super::otlp_enabled("METRICS") {
            let otlp = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
                .context("cannot set up the OTLP metric exporter")?;
            builder = builder.with_reader(PeriodicReader::builder(otlp).build());
        }
        let provider = builder.build();
        let meter = provider.meter("dsr-orchestrator");
        let snapshot = Arc::new(Mutex::new(Stats::default()));
        super::gauges::register(&meter, snapshot.clone(), clock);
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let histogram = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Ok(Arc::new(Self {
            requests_submitted: counter(
                "dsr_requests_submitted",
                "Requests taken in, by kind and jurisdiction.",
            ),
            requests_completed: counter(
                "dsr_requests_completed",
                "Requests that got their completion record, by kind, jurisdiction and outcome.",
            ),
            instructions_finished: counter(
                "dsr_instructions_finished",
                "Instructions that reached a terminal state, by processor and state.",
            ),
            escalations: counter(
                "dsr_instructions_escalations",
                "Instructions escalated to an operator, by processor.",
            ),
            claimed: counter(
                "dsr_instructions_claimed",
                "Instructions leased for delivery, by processor and reason (first, retry, reminder).",
            ),
            delivery_attempts: counter(
                "dsr_delivery_attempts",
                "Push delivery attempts, by processor and result.",
            ),
            delivery_failures: counter(
                "dsr_delivery_failures",
                "Failed push deliveries, by processor and gRPC code.",
            ),
            breaker_changes: counter(
                "dsr_circuit_breaker_changes",
                "Circuit breakers opened or closed by this replica, by processor and state (open, closed).",
            ),
            cancel_notices: counter(
                "dsr_cancel_notices",
                "Cancel notices sent to push processors, by processor and result (sent, retried, given_up).",
            ),
            delivery_duration: histogram(
                "dsr_delivery_duration",
                "Duration of one push delivery call, by processor.",
                LATENCY_BUCKETS,
            ),
            time_to_acknowledge: histogram(
                "dsr_time_to_acknowledge",
                "From first delivery to the processor's acknowledgement, by processor.",
                ACK_BUCKETS,
            ),
            claim_duration: histogram(
                "dsr_claim_duration",
                "Duration of one claim (lease) statement for one processor.",
                LATENCY_BUCKETS,
            ),
            dispatch_yields: counter(
                "dsr_dispatch_yields",
                "Dispatcher passes that held deliveries to a quarter of --max-in-flight \
                 while submissions queued.",
            ),
            registry,
            provider,
            snapshot,
        }))
    }

    /// A request was taken in.
    pub fn request_submitted(&self, kind: &'static str, jurisdiction: &'static str) {
        self.requests_submitted.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("jurisdiction", jurisdiction),
            ],
        );
    }

    /// A claim pass for one processor finished.
    pub fn claim_finished(&self, processor: &str, took: Duration, kinds: &[ClaimKind]) {
        self.claim_duration.record(took.as_secs_f64(), &[]);
        for kind in kinds {
            let reason = match kind {
                ClaimKind::First => "first",
                ClaimKind::Retry => "retry",
                ClaimKind::Reminder => "reminder",
            };
            self.claimed.add(
                1,
                &[
                    KeyValue::new("processor", processor.to_string()),
                    KeyValue::new("reason", reason),
                ],
            );
        }
    }

    /// A dispatcher pass held deliveries back for intake.
    pub fn dispatch_yielded(&self) {
        self.dispatch_yields.add(1, &[]);
    }

    /// A push delivery ended with `result` (as its history records it)
    /// and, for errors, `code`.
    pub fn delivery_finished(
        &self,
        processor: &str,
        result: AttemptResult,
        code: Option<&str>,
        took: Duration,
    ) {
        let p = KeyValue::new("processor", processor.to_string());
        self.delivery_attempts
            .add(1, &[p.clone(), KeyValue::new("result", result.as_str())]);
        self.delivery_duration
            .record(took.as_secs_f64(), std::slice::from_ref(&p));
        if let Some(code) = code {
            self.delivery_failures
                .add(1, &[p, KeyValue::new("code", code.to_string())]);
        }
    }

    /// This replica opened (`open`) or closed (`closed`) a processor's
    /// circuit breaker.
    pub fn breaker_changed(&self, processor: &str, state: &'static str) {
        self.breaker_changes.add(
            1,
            &[
                KeyValue::new("processor", processor.to_string()),
                KeyValue::new("state", state),
            ],
        );
    }

    /// A cancel notice to a push processor was `sent`, `retried` or
    /// `given_up`.
    pub fn cancel_notice(&self, processor: &str, result: &'static str) {
        self.cancel_notices.add(
            1,
            &[
                KeyValue::new("processor", processor.to_string()),
                KeyValue::new("result", result),
            ],
        );
    }

    /// Reads the open work from the database, then renders every metric in
    /// the Prometheus text format.
    pub async fn render(&self, store: &Store, clock: &dyn Clock) -> anyhow::Result<String> {
        let stats = store.stats(clock.now()).await?;
        *self.snapshot.lock().expect("metrics snapshot lock") = stats;
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    /// Keeps the gauges fresh for OTLP push, every `every` until `stop`
    /// (Prometheus refreshes them on scrape); `None` when metrics are not
    /// pushed.
    pub fn refresher(
        self: &Arc<Self>,
        store: Store,
        clock: Arc<dyn Clock>,
        every: Duration,
        stop: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        if !super::otlp_enabled("METRICS") {
            return None;
        }
        let this = self.clone();
        Some(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match store.stats(clock.now()).await {
                    Ok(stats) => *this.snapshot.lock().expect("metrics snapshot lock") = stats,
                    Err(e) => tracing::warn!(error = %e, "could not refresh the open-work gauges"),
                }
            }
        })
    }

    /// Flushes pushed metrics (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

impl StoreObserver for Metrics {
    fn instruction_changed(&self, v: &InstructionView) {
        let p = KeyValue::new("processor", v.processor_id.to_string());
        if v.state.is_terminal() {
            self.instructions_finished
                .add(1, &[p, KeyValue::new("state", v.state.as_str())]);
        } else if v.state == InstructionState::Escalated {
            self.escalations.add(1, &[p]);
        } else if v.state == InstructionState::Acknowledged && v.reminders == 0 {
            // The first acknowledgement (a reminder's does not count again).
            if let (Some(first), Some(ack)) = (v.first_instructed_at, v.acknowledged_at) {
                let secs = (ack - first).num_milliseconds().max(0) as f64 / 1000.0;
                self.time_to_acknowledge.record(secs, &[p]);
            }
        }
    }

    fn request_closed(&self, c: &ClosedRequest) {
        self.requests_completed.add(
            1,
            &[
                KeyValue::new("kind", c.kind.as_str()),
                KeyValue::new("jurisdiction", c.jurisdiction.as_str()),
                KeyValue::new("outcome", c.outcome.as_str()),
            ],
        );
    }
}
