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
//! same label vocabulary, and a [`Family`] in [`FAMILIES`].
//!
//! Every family is listed from the first scrape: one that has no series
//! yet (nothing counted, no processor registered) is shown with a single
//! zero series without labels, so dashboards and `absent()` alerts work on
//! a fresh replica; `dsr_build_info` names the version and the backend.
//! OpenTelemetry itself only exports series that have been recorded, so
//! the zeros are added to the Prometheus text, not to OTLP pushes.
//!
//! A scrape while the database is away still answers: the gauges of open
//! work keep the last values read, `dsr_database_up` is 0, and the
//! counters, histograms and the delivery limits are this process's own.
//! `dsr_database_up` is this replica's view, as its readiness is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::AttemptResult;
use crate::store::{ClaimKind, ErasureSchedule, Stats, Store};

use super::ConnectionStats;
use super::families::*;

/// How long a scrape waits for the open-work gauges once the database
/// answered: with the ping, inside Prometheus's default scrape timeout
/// (10 s).
const STATS_WAIT: Duration = Duration::from_secs(5);

/// The instruments, and the registry Prometheus reads.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    /// The gauges' values, refreshed from the database before each scrape.
    snapshot: Arc<Mutex<Stats>>,
    /// Whether the database answered at the last refresh.
    database_up: Arc<AtomicBool>,
    requests_submitted: Counter<u64>,
    requests_completed: Counter<u64>,
    instructions_finished: Counter<u64>,
    escalations: Counter<u64>,
    claimed: Counter<u64>,
    delivery_attempts: Counter<u64>,
    delivery_failures: Counter<u64>,
    cancel_notices: Counter<u64>,
    opendsr_callbacks: Counter<u64>,
    breaker_changes: Counter<u64>,
    delivery_duration: Histogram<f64>,
    time_to_acknowledge: Histogram<f64>,
    claim_duration: Histogram<f64>,
    claim_history_duration: Histogram<f64>,
    dispatch_yields: Counter<u64>,
    dispatch_passes: Counter<u64>,
    delivery_limit: Gauge<u64>,
    requests_erased: Counter<u64>,
    suppression_added: Counter<u64>,
    resealed: Counter<u64>,
    /// When finished requests' personal data goes, for the gauge of
    /// erasures overdue.
    erasure: ErasureSchedule,
    /// What the gRPC listener's connection table counts.
    connections: Arc<ConnectionStats>,
}

impl Metrics {
    /// Creates the instruments. `clock` dates the age gauges;
    /// `database_url` names the backend in `dsr_build_info`;
    /// `erasure` is the server's erasure schedule.
    pub fn new(
        clock: Arc<dyn Clock>,
        database_url: &str,
        erasure: ErasureSchedule,
    ) -> anyhow::Result<Arc<Self>> {
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
        let connections = Arc::new(ConnectionStats::default());
        super::connections::register(&meter, connections.clone());
        let database_up = Arc::new(AtomicBool::new(false));
        let up = database_up.clone();
        meter
            .u64_observable_gauge(DATABASE_UP.name)
            .with_description(DATABASE_UP.help)
            .with_callback(move |o| o.observe(u64::from(up.load(Ordering::Relaxed)), &[]))
            .build();
        let counter = |f: &Family| meter.u64_counter(f.name).with_description(f.help).build();
        let histogram = |f: &Family| {
            let Shape::Histogram(buckets) = f.shape else {
                unreachable!("{} is not a histogram", f.name)
            };
            meter
                .f64_histogram(f.name)
                .with_unit("s")
                .with_description(f.help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let backend =
            crate::store::Backend::from_url(database_url).map_or("unknown", |b| b.as_str());
        meter
            .u64_gauge(BUILD_INFO.name)
            .with_description(BUILD_INFO.help)
            .build()
            .record(
                1,
                &[
                    KeyValue::new("version", env!("CARGO_PKG_VERSION")),
                    KeyValue::new("backend", backend),
                ],
            );
        Ok(Arc::new(Self {
            requests_submitted: counter(&REQUESTS_SUBMITTED),
            requests_completed: counter(&REQUESTS_COMPLETED),
            instructions_finished: counter(&INSTRUCTIONS_FINISHED),
            escalations: counter(&ESCALATIONS),
            claimed: counter(&CLAIMED),
            delivery_attempts: counter(&DELIVERY_ATTEMPTS),
            delivery_failures: counter(&DELIVERY_FAILURES),
            breaker_changes: counter(&BREAKER_CHANGES),
            cancel_notices: counter(&CANCEL_NOTICES),
            opendsr_callbacks: counter(&OPENDSR_CALLBACKS),
            delivery_duration: histogram(&DELIVERY_DURATION),
            time_to_acknowledge: histogram(&TIME_TO_ACKNOWLEDGE),
            claim_duration: histogram(&CLAIM_DURATION),
            claim_history_duration: histogram(&CLAIM_HISTORY_DURATION),
            dispatch_yields: counter(&DISPATCH_YIELDS),
            dispatch_passes: counter(&DISPATCH_PASSES),
            delivery_limit: meter
                .u64_gauge(DELIVERY_LIMIT.name)
                .with_description(DELIVERY_LIMIT.help)
                .build(),
            requests_erased: counter(&REQUESTS_ERASED),
            suppression_added: counter(&SUPPRESSION_ADDED),
            resealed: counter(&RESEALED),
            erasure,
            connections,
            registry,
            provider,
            snapshot,
            database_up,
        }))
    }

    /// What the gRPC listener's connection table counts into.
    pub fn connections(&self) -> Arc<ConnectionStats> {
        self.connections.clone()
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

    /// A claim's history was written (PostgreSQL), taking `took`.
    pub fn claim_history_written(&self, took: Duration) {
        self.claim_history_duration.record(took.as_secs_f64(), &[]);
    }

    /// A claim pass for one processor finished, taking `took`.
    pub fn claim_finished(&self, took: Duration) {
        self.claim_duration.record(took.as_secs_f64(), &[]);
    }

    /// Instructions of these `kinds` were leased for `processor`, to be
    /// sent.
    pub fn instructions_claimed(&self, processor: &str, kinds: &[ClaimKind]) {
        for kind in kinds {
            self.claimed.add(
                1,
                &[
                    KeyValue::new("processor", processor.to_string()),
                    KeyValue::new("reason", kind.as_str()),
                ],
            );
        }
    }

    /// The dispatcher began a pass.
    pub fn dispatch_pass(&self) {
        self.dispatch_passes.add(1, &[]);
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

    /// This replica may now have `limit` deliveries in flight to a
    /// processor.
    pub fn delivery_limit(&self, processor: &str, limit: u32) {
        self.delivery_limit.record(
            u64::from(limit),
            &[KeyValue::new("processor", processor.to_string())],
        );
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

    /// An OpenDSR status callback was `applied`, or refused (`unsigned`,
    /// `bad_signature`, `no_certificate`, `rejected`).
    pub fn opendsr_callback(&self, processor: &str, result: &'static str) {
        self.opendsr_callbacks.add(
            1,
            &[
                KeyValue::new("processor", processor.to_string()),
                KeyValue::new("result", result),
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
        self.refresh(store, clock).await;
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        let mut text = String::from_utf8(out)?;
        let shown: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        let missing: Vec<&Family> = FAMILIES
            .iter()
            .filter(|f| !shown.contains(f.exported().as_str()))
            .collect();
        for family in missing {
            family.zero(&mut text);
        }
        Ok(text)
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
                this.refresh(&store, clock.as_ref()).await;
            }
        })
    }

    /// Asks whether the database answers (`dsr_database_up`, as `/readyz`
    /// asks), and if it does reads the open-work gauges, waiting at most
    /// [`STATS_WAIT`]. When either fails the gauges keep their last values:
    /// the counters and histograms, kept in this process, are served
    /// through an outage, when they matter most.
    async fn refresh(&self, store: &Store, clock: &dyn Clock) {
        let up = store.answers().await;
        self.database_up.store(up, Ordering::Relaxed);
        if !up {
            tracing::warn!("could not refresh the open-work gauges: the database does not answer");
            return;
        }
        let read = tokio::time::timeout(STATS_WAIT, store.stats(clock.now(), self.erasure)).await;
        match read {
            Ok(Ok(stats)) => *self.snapshot.lock().expect("metrics snapshot lock") = stats,
            Ok(Err(e)) => tracing::warn!(error = %e, "could not refresh the open-work gauges"),
            Err(_) => tracing::warn!(
                "could not refresh the open-work gauges: they took longer than {STATS_WAIT:?}"
            ),
        }
    }

    /// Flushes pushed metrics (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

#[path = "metrics_observer.rs"]
mod observer;
