//! The gauges of open work, read from the snapshot of [`Stats`] that the
//! metrics refresh from the database before each scrape (and on a timer for
//! OTLP push): open requests and their age, open instructions, the due
//! queue, requests by time left, receipts overdue, open circuit breakers.

use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::clock::Clock;
use crate::store::Stats;

pub(super) fn register(meter: &Meter, snapshot: Arc<Mutex<Stats>>, clock: Arc<dyn Clock>) {
    let s = snapshot.clone();
    meter
        .u64_observable_gauge("dsr_requests_open")
        .with_description("Open requests (received or in progress), by status.")
        .with_callback(move |o| {
            for (status, n, _) in &s.lock().expect("snapshot").open_requests {
                o.observe(*n, &[KeyValue::new("status", status.as_str())]);
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .f64_observable_gauge("dsr_requests_oldest_open_age")
        .with_unit("s")
        .with_description("Age of the oldest open request, by status.")
        .with_callback(move |o| {
            let now = clock.now();
            for (status, _, oldest) in &s.lock().expect("snapshot").open_requests {
                if let Some(t) = oldest {
                    let age = (now - *t).num_milliseconds().max(0) as f64 / 1000.0;
                    o.observe(age, &[KeyValue::new("status", status.as_str())]);
                }
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge("dsr_instructions_open")
        .with_description(
            "Instructions not yet terminal, by processor and state (ESCALATED ones need an operator).",
        )
        .with_callback(move |o| {
            for (p, state, n) in &s.lock().expect("snapshot").open_instructions {
                o.observe(
                    *n,
                    &[
                        KeyValue::new("processor", p.to_string()),
                        KeyValue::new("state", state.as_str()),
                    ],
                );
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge("dsr_requests_by_time_left")
        .with_description(
            "Open requests by the time left to their response deadline: overdue, under_1d, \
             under_7d, under_30d, 30d_or_more.",
        )
        .with_callback(move |o| {
            for (bucket, n) in &s.lock().expect("snapshot").by_time_left {
                o.observe(*n, &[KeyValue::new("time_left", *bucket)]);
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge("dsr_circuit_breaker_open")
        .with_description(
            "1 for each push processor whose circuit breaker is open, by processor and state \
             (open, half_open).",
        )
        .with_callback(move |o| {
            for (p, half_open) in &s.lock().expect("snapshot").breakers {
                let state = if *half_open { "half_open" } else { "open" };
                o.observe(
                    1,
                    &[
                        KeyValue::new("processor", p.to_string()),
                        KeyValue::new("state", state),
                    ],
                );
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge("dsr_requests_receipt_overdue")
        .with_description("Open requests whose receipt confirmation to the person is overdue.")
        .with_callback(move |o| {
            o.observe(s.lock().expect("snapshot").receipt_overdue, &[]);
        })
        .build();
    meter
        .u64_observable_gauge("dsr_queue_depth")
        .with_description("PENDING instructions already due for delivery, by processor.")
        .with_callback(move |o| {
            for (p, n) in &snapshot.lock().expect("snapshot").due {
                o.observe(*n, &[KeyValue::new("processor", p.to_string())]);
            }
        })
        .build();
}
