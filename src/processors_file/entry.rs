//! The shape of the processors file, as serde reads it, and each entry's
//! conversion into a [`ProcessorSpec`] through the domain's constructors.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

use crate::domain::{
    AdapterConfig, DeliveryLimits, IdentityType, ProcessorId, ProcessorRole, ProcessorSpec,
    ProcessorTls, RequestKind, RetryPolicy, Violations,
};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub processors: Vec<Entry>,
}

/// One processor as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Entry {
    #[serde(deserialize_with = "processor_id")]
    pub processor_id: ProcessorId,
    display_name: String,
    role: ProcessorRole,
    country: String,
    supported_kinds: Vec<RequestKind>,
    accepted_identity_types: Vec<IdentityType>,
    // The adapter is written as a one-key map (`{ grpc: ... }`) rather than
    // the YAML tag (`!grpc`) serde_yaml_ng expects for enums by default.
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    adapter: Adapter,
    #[serde(default)]
    retry_policy: Option<Retry>,
    #[serde(default, deserialize_with = "duration")]
    ack_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    completion_timeout: Option<Duration>,
    #[serde(default)]
    max_reminders: Option<u32>,
    #[serde(default)]
    max_in_flight: Option<u32>,
    #[serde(default)]
    max_deliveries_per_second: u32,
    #[serde(default, deserialize_with = "duration")]
    safety_margin: Option<Duration>,
}

/// `{ grpc: {...} }`, `{ webhook: {...} }`, `{ dsr: {...} }`,
/// `{ opendsr: {...} }`, `{ pull: {} }` or `{ manual: {} }`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Adapter {
    Grpc(Grpc),
    Webhook(Webhook),
    Dsr(Dsr),
    #[serde(rename = "opendsr")]
    OpenDsr(OpenDsr),
    Pull(Empty),
    Manual(Empty),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grpc {
    endpoint: String,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    tls: Option<Tls>,
}

/// `webhook: { url, timeout, tls }`. Its signing secret is not in the
/// file: `RotateWebhookSecret` issues one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Webhook {
    url: String,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    tls: Option<Tls>,
}

/// `dsr: { endpoint, timeout, tls, token_file, poll_interval }`: another
/// orchestrator.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dsr {
    endpoint: String,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    tls: Option<Tls>,
    #[serde(default)]
    token_file: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
}

/// `opendsr: { url, timeout, tls, poll_interval }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenDsr {
    url: String,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default)]
    tls: Option<Tls>,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
}

/// `tls: { ca_file, client_cert_file, client_key_file }` of a push adapter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    ca_file: Option<String>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
}

/// The settings-less adapters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    #[serde(default, deserialize_with = "duration")]
    initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    max_backoff: Option<Duration>,
    #[serde(default)]
    multiplier: Option<f64>,
    #[serde(default)]
    max_attempts: Option<u32>,
}

impl Entry {
    /// Runs the domain checks, collecting every problem of the entry.
    pub fn into_spec(self) -> Result<ProcessorSpec, Violations> {
        let mut v = Violations::new();
        let adapter = v.take("adapter", self.adapter.into_config());
        let retry_policy = v.take(
            "retry_policy",
            self.retry_policy
                .map_or_else(|| Ok(RetryPolicy::default()), Retry::into_policy),
        );
        // A failed adapter or retry policy is replaced by a stand-in so the
        // constructor still checks the other fields; the failure is already
        // recorded, so the stand-in never escapes.
        let spec = v.take(
            "",
            ProcessorSpec::new(
                self.processor_id,
                &self.display_name,
                self.role,
                &self.country,
                self.supported_kinds,
                self.accepted_identity_types,
                adapter.unwrap_or(AdapterConfig::Manual),
                retry_policy.unwrap_or_default(),
                self.ack_timeout,
                self.completion_timeout,
                self.max_reminders,
                DeliveryLimits {
                    max_in_flight: self.max_in_flight,
                    max_deliveries_per_second: self.max_deliveries_per_second,
                },
                self.safety_margin,
            ),
        );
        match spec {
            Some(spec) if v.is_empty() => Ok(spec),
            _ => Err(v),
        }
    }
}

impl Adapter {
    fn into_config(self) -> Result<AdapterConfig, Violations> {
        match self {
            Adapter::Grpc(g) => {
                let mut v = Violations::new();
                let tls = g.tls.map(Tls::into_files);
                let config = v.take("grpc", AdapterConfig::grpc(&g.endpoint, g.timeout, tls));
                config.ok_or(v)
            }
            Adapter::Webhook(w) => {
                let mut v = Violations::new();
                let tls = w.tls.map(Tls::into_files);
                let config = v.take("webhook", AdapterConfig::webhook(&w.url, w.timeout, tls));
                config.ok_or(v)
            }
            Adapter::Dsr(d) => {
                let mut v = Violations::new();
                let tls = d.tls.map(Tls::into_files);
                let config = v.take(
                    "dsr",
                    AdapterConfig::dsr(&d.endpoint, d.timeout, tls, d.token_file, d.poll_interval),
                );
                config.ok_or(v)
            }
            Adapter::OpenDsr(o) => {
                let mut v = Violations::new();
                let tls = o.tls.map(Tls::into_files);
                let config = v.take(
                    "opendsr",
                    AdapterConfig::opendsr(&o.url, o.timeout, tls, o.poll_interval),
                );
                config.ok_or(v)
            }
            Adapter::Pull(Empty {}) => Ok(AdapterConfig::Pull),
            Adapter::Manual(Empty {}) => Ok(AdapterConfig::Manual),
        }
    }
}

impl Tls {
    fn into_files(self) -> ProcessorTls {
        ProcessorTls {
            ca_file: self.ca_file,
            client_cert_file: self.client_cert_file,
            client_key_file: self.client_key_file,
        }
    }
}

impl Retry {
    fn into_policy(self) -> Result<RetryPolicy, Violations> {
        RetryPolicy::new(
            self.initial_backoff,
            self.max_backoff,
            self.multiplier,
            self.max_attempts,
        )
    }
}

/// A processor id, rejected while parsing so the error carries its line.
fn processor_id<'de, D: Deserializer<'de>>(d: D) -> Result<ProcessorId, D::Error> {
    parse_str(d, "a processor id", |s| {
        ProcessorId::parse(s).map_err(|violations| {
            let why: Vec<_> = violations.iter().map(|v| v.description.as_str()).collect();
            format!("{s:?} {}", why.join("; "))
        })
    })
}

/// A `humantime` duration such as `10s` or `7d`.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 10s, 5m or 7d", |s| {
        humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. 10s, 5m, 7d"))
    })
}

/// Parses a string scalar with `parse` inside the deserializer's own
/// `visit_str`: serde_yaml_ng pins an error raised there to the scalar's
/// line and field path, whereas one raised after deserializing a `String`
/// would be pinned to the start of the enclosing entry.
fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Scalar<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }

    impl<T> Visitor<'_> for Scalar<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }

    d.deserialize_str(Scalar { expecting, parse })
}
