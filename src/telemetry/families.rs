//! The metric families this service exports, in one list: each
//! instrument is built from its [`Family`], and `/metrics` shows a zero
//! series for each family that has none yet (see [`super::metrics`]).

/// Bucket bounds (seconds) for delivery and claim latencies.
pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds (seconds) for time to acknowledge: milliseconds to days.
pub(super) const ACK_BUCKETS: &[f64] = &[
    0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0, 604800.0,
];

/// One metric family: its instrument's name and description, and its
/// shape, which decides the name Prometheus shows it under.
pub(super) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub shape: Shape,
}

/// What kind of instrument a [`Family`] is.
pub(super) enum Shape {
    /// Shown as `<name>_total`.
    Counter,
    /// In seconds, with these bucket bounds; shown as `<name>_seconds`.
    Histogram(&'static [f64]),
    /// Shown as `<name>`.
    Gauge,
    /// In seconds; shown as `<name>_seconds`.
    SecondsGauge,
}

impl Family {
    /// The name Prometheus shows, as the exporter derives it.
    pub(super) fn exported(&self) -> String {
        match self.shape {
            Shape::Counter => format!("{}_total", self.name),
            Shape::Histogram(_) | Shape::SecondsGauge => format!("{}_seconds", self.name),
            Shape::Gauge => self.name.to_string(),
        }
    }

    /// The family with one zero series without labels, in the text format.
    pub(super) fn zero(&self, out: &mut String) {
        use std::fmt::Write as _;
        let name = self.exported();
        let kind = match self.shape {
            Shape::Counter => "counter",
            Shape::Histogram(_) => "histogram",
            Shape::Gauge | Shape::SecondsGauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if let Shape::Histogram(bounds) = self.shape {
            for bound in bounds {
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} 0");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} 0");
            let _ = writeln!(out, "{name}_sum 0");
            let _ = writeln!(out, "{name}_count 0");
        } else {
            let _ = writeln!(out, "{name} 0");
        }
    }
}

macro_rules! families {
    ($($id:ident = $name:literal, $shape:expr, $help:literal;)*) => {
        $(pub(super) const $id: Family = Family { name: $name, help: $help, shape: $shape };)*
        /// Every family this service exports.
        pub(super) const FAMILIES: &[Family] = &[$($id),*];
    };
}

families! {
    BUILD_INFO = "dsr_build_info", Shape::Gauge,
        "1, labelled with the version and the database backend of this replica.";
    REQUESTS_SUBMITTED = "dsr_requests_submitted", Shape::Counter,
        "Requests taken in, by kind and jurisdiction.";
    REQUESTS_COMPLETED = "dsr_requests_completed", Shape::Counter,
        "Requests that got their completion record, by kind, jurisdiction and outcome.";
    INSTRUCTIONS_FINISHED = "dsr_instructions_finished", Shape::Counter,
        "Instructions that reached a terminal state, by processor and state.";
    ESCALATIONS = "dsr_instructions_escalations", Shape::Counter,
        "Instructions escalated to an operator, by processor.";
    CLAIMED = "dsr_instructions_claimed", Shape::Counter,
        "Instructions leased for delivery and sent, by processor and reason (first, retry, reminder).";
    DELIVERY_ATTEMPTS = "dsr_delivery_attempts", Shape::Counter,
        "Push delivery attempts, by processor and result.";
    DELIVERY_FAILURES = "dsr_delivery_failures", Shape::Counter,
        "Failed push deliveries, by processor and gRPC code.";
    BREAKER_CHANGES = "dsr_circuit_breaker_changes", Shape::Counter,
        "Circuit breakers opened or closed by this replica, by processor and state (open, closed).";
    CANCEL_NOTICES = "dsr_cancel_notices", Shape::Counter,
        "Cancel notices sent to push processors, by processor and result (sent, retried, given_up).";
    OPENDSR_CALLBACKS = "dsr_opendsr_callbacks", Shape::Counter,
        "OpenDSR status callbacks, by processor and result (applied, unsigned, bad_signature, no_certificate, rejected).";
    DISPATCH_YIELDS = "dsr_dispatch_yields", Shape::Counter,
        "Dispatcher passes that claimed only up to a quarter of --max-in-flight (64 at most) not waiting for processors' answers, while submissions queued.";
    DISPATCH_PASSES = "dsr_dispatch_passes", Shape::Counter,
        "Dispatcher passes (escalate, claim, start deliveries) this replica made.";
    DELIVERY_DURATION = "dsr_delivery_duration", Shape::Histogram(LATENCY_BUCKETS),
        "Duration of one push delivery call, by processor.";
    TIME_TO_ACKNOWLEDGE = "dsr_time_to_acknowledge", Shape::Histogram(ACK_BUCKETS),
        "From first delivery to the processor's acknowledgement, by processor.";
    CLAIM_DURATION = "dsr_claim_duration", Shape::Histogram(LATENCY_BUCKETS),
        "Duration of a pass's claim, until its leases commit (one sample per processor claimed for).";
    CLAIM_HISTORY_DURATION = "dsr_claim_history_duration", Shape::Histogram(LATENCY_BUCKETS),
        "PostgreSQL: duration of writing a claim's history (its events and request bumps), after its leases commit and before its deliveries start.";
    DATABASE_UP = "dsr_database_up", Shape::Gauge,
        "1 when the database answered this replica at the last scrape (within 2 s, as readiness asks); 0 when it did not, and the open-work gauges show the last values read.";
    REQUESTS_OPEN = "dsr_requests_open", Shape::Gauge,
        "Open requests (received or in progress), by status.";
    OLDEST_OPEN_AGE = "dsr_requests_oldest_open_age", Shape::SecondsGauge,
        "Age of the oldest open request, by status.";
    INSTRUCTIONS_OPEN = "dsr_instructions_open", Shape::Gauge,
        "Instructions not yet terminal, by processor and state (ESCALATED ones need an operator).";
    BY_TIME_LEFT = "dsr_requests_by_time_left", Shape::Gauge,
        "Open requests by the time left to their response deadline: overdue, under_1d, under_7d, under_30d, 30d_or_more.";
    BREAKERS_OPEN = "dsr_circuit_breaker_open", Shape::Gauge,
        "1 for each push processor whose circuit breaker is open, by processor and state (open, half_open).";
    RECEIPT_OVERDUE = "dsr_requests_receipt_overdue", Shape::Gauge,
        "Open requests whose receipt confirmation to the person is overdue.";
    DELIVERY_LIMIT = "dsr_delivery_limit", Shape::Gauge,
        "Deliveries this replica may have in flight to a push processor, by processor: its max_in_flight, or the adaptive limit learnt from its answers when it has none.";
    QUEUE_DEPTH = "dsr_queue_depth", Shape::Gauge,
        "PENDING instructions already due for delivery, by processor.";
    REQUESTS_ERASED = "dsr_requests_erased", Shape::Counter,
        "Finished requests whose personal data (identities, payloads, returned data records) this replica erased.";
    SUPPRESSION_ADDED = "dsr_suppression_entries_added", Shape::Counter,
        "Identities of carried-out deletions this replica added to the suppression list (as keyed hashes).";
    RESEALED = "dsr_resealed", Shape::Counter,
        "Sealed values at rest this replica wrote under the active key, resealed or sealed for the first time (what: values), and idempotency fingerprints it keyed (what: fingerprints).";
    CONNECTIONS = "dsr_grpc_connections", Shape::Gauge,
        "Connections open on the gRPC listener.";
    CONNECTIONS_MAX = "dsr_grpc_connections_max", Shape::Gauge,
        "Most connections the gRPC listener keeps open (--max-connections; by default half the descriptor limit, 256 to 65,536); a newcomer beyond them closes the quietest.";
    CONNECTIONS_CLOSED = "dsr_grpc_connections_closed", Shape::Counter,
        "Connections the server closed on the gRPC listener, by reason: room (the quietest, for a newcomer at dsr_grpc_connections_max), stalled_reader (a reader that stopped reading a streamed report or export).";
    ERASURE_OVERDUE = "dsr_requests_erasure_overdue", Shape::Gauge,
        "Finished requests whose personal data was due for erasure more than two --erase-interval ago and is still held: the eraser is failing, or cannot open their subjects.";
}
