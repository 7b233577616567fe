//! The gauges of open work, read from the snapshot of [`Stats`] that the
//! metrics refresh from the database before each scrape (and on a timer for
//! OTLP push): open requests and their age, open instructions, the due
//! queue, requests by time left, receipts overdue, open circuit breakers,
//! finished requests whose erasure is overdue.

use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::clock::Clock;
use crate::store::Stats;

use super::families::{
    BREAKERS_OPEN, BY_TIME_LEFT, ERASURE_OVERDUE, INSTRUCTIONS_OPEN, OLDEST_OPEN_AGE, QUEUE_DEPTH,
    RECEIPT_OVERDUE, REQUESTS_OPEN,
};

pub(super) fn register(meter: &Meter, snapshot: Arc<Mutex<Stats>>, clock: Arc<dyn Clock>) {
    let s = snapshot.clone();
    meter
        .u64_observable_gauge(REQUESTS_OPEN.name)
        .with_description(REQUESTS_OPEN.help)
        .with_callback(move |o| {
            for (status, n, _) in &s.lock().expect("snapshot").open_requests {
                o.observe(*n, &[KeyValue::new("status", status.as_str())]);
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .f64_observable_gauge(OLDEST_OPEN_AGE.name)
        .with_unit("s")
        .with_description(OLDEST_OPEN_AGE.help)
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
        .u64_observable_gauge(INSTRUCTIONS_OPEN.name)
        .with_description(INSTRUCTIONS_OPEN.help)
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
        .u64_observable_gauge(BY_TIME_LEFT.name)
        .with_description(BY_TIME_LEFT.help)
        .with_callback(move |o| {
            for (bucket, n) in &s.lock().expect("snapshot").by_time_left {
                o.observe(*n, &[KeyValue::new("time_left", *bucket)]);
            }
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge(BREAKERS_OPEN.name)
        .with_description(BREAKERS_OPEN.help)
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
        .u64_observable_gauge(RECEIPT_OVERDUE.name)
        .with_description(RECEIPT_OVERDUE.help)
        .with_callback(move |o| {
            o.observe(s.lock().expect("snapshot").receipt_overdue, &[]);
        })
        .build();
    let s = snapshot.clone();
    meter
        .u64_observable_gauge(ERASURE_OVERDUE.name)
        .with_description(ERASURE_OVERDUE.help)
        .with_callback(move |o| {
            o.observe(s.lock().expect("snapshot").erasure_overdue, &[]);
        })
        .build();
    meter
        .u64_observable_gauge(QUEUE_DEPTH.name)
        .with_description(QUEUE_DEPTH.help)
        .with_callback(move |o| {
            for (p, n) in &snapshot.lock().expect("snapshot").due {
                o.observe(*n, &[KeyValue::new("processor", p.to_string())]);
            }
        })
        .build();
}
