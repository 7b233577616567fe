//! Processors: everyone who holds personal data on the business's behalf and
//! must therefore be instructed (CCPA 1798.105(c), GDPR Art. 19). A
//! [`ProcessorSpec`] is what an operator declares; a [`Processor`] is what is
//! stored, with its status and timestamps.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outcome::is_country_code;
use super::violation::check_len;
use super::{
    IdentityType, ProcessorId, ProcessorRole, RequestKind, RetryPolicy, Timestamp, Violations,
};

/// How instructions reach a processor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdapterConfig {
    /// The dispatcher calls the processor's `ProcessorAdapter` service.
    Grpc {
        /// `http://` or `https://` URI with host and port.
        endpoint: String,
        /// Deadline of one delivery call.
        #[serde(with = "millis")]
        timeout: Duration,
        /// TLS files beyond the public roots (`https://` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<ProcessorTls>,
    },
    /// The orchestrator POSTs each instruction as JSON to the processor's
    /// URL, signed per Standard Webhooks with the processor's secret (kept
    /// apart from the spec, sealed).
    Webhook {
        /// `https://` (or loopback `http://`) URL with host, optional port
        /// and path.
        url: String,
        /// Deadline of one POST.
        #[serde(with = "millis")]
        timeout: Duration,
        /// TLS files beyond the public roots (`https://` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<ProcessorTls>,
    },
    /// The processor leases its instructions with `PullInstructions`.
    Pull,
    /// An operator passes instructions on and records the answers.
    Manual,
}

impl AdapterConfig {
    /// Default deadline of one push delivery.
    pub const DEFAULT_GRPC_TIMEOUT: Duration = Duration::from_secs(10);

    /// A gRPC push adapter; checks the endpoint, timeout and TLS files.
    pub fn grpc(
        endpoint: &str,
        timeout: Option<Duration>,
        tls: Option<ProcessorTls>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        if let Some(tls) = &tls {
            v.take("tls", tls.check());
            if !endpoint.starts_with("https://") {
                v.add("tls", "is only used with an https:// endpoint");
            }
        }
        if has_user_info(endpoint) {
            v.add(
                "endpoint",
                "must not hold user information (user:password@): an endpoint carries no credentials",
            );
        } else if !valid_endpoint(endpoint) {
            v.add(
                "endpoint",
                "must be an http:// or https:// URI with a host and port and no path",
            );
        }
        let timeout = timeout.unwrap_or(Self::DEFAULT_GRPC_TIMEOUT);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(300) {
            v.add("timeout", "must be between 100ms and 5m");
        }
        v.finish(|| Self::Grpc {
            endpoint: endpoint.to_string(),
            timeout,
            tls,
        })
    }

    /// A webhook adapter; checks the URL, timeout and TLS files.
    pub fn webhook(
        url: &str,
        timeout: Option<Duration>,
        tls: Option<ProcessorTls>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        if let Some(tls) = &tls {
            v.take("tls", tls.check());
            if !url.starts_with("https://") {
                v.add("tls", "is only used with an https:// url");
            }
        }
        if has_user_info(url) {
            v.add(
                "url",
                "must not hold user information (user:password@): a URL carries no credentials",
            );
        } else if !valid_url(url) {
            v.add(
                "url",
                "must be an http:// or https:// URL with a host, without a fragment, at most 2048 characters",
            );
        }
        let timeout = timeout.unwrap_or(Self::DEFAULT_GRPC_TIMEOUT);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(300) {
            v.add("timeout", "must be between 100ms and 5m");
        }
        v.finish(|| Self::Webhook {
            url: url.to_string(),
            timeout,
            tls,
        })
    }

    /// The deadline of one delivery, for adapters the dispatcher pushes
    /// through (gRPC, webhook); `None` for pull and manual.
    pub fn push_timeout(&self) -> Option<Duration> {
        match self {
            Self::Grpc { timeout, .. } | Self::Webhook { timeout, .. } => Some(*timeout),
            Self::Pull | Self::Manual => None,
        }
    }

    /// Stable name of the adapter kind (SQL column).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Grpc { .. } => "grpc",
            Self::Webhook { .. } => "webhook",
            Self::Pull => "pull",
            Self::Manual => "manual",
        }
    }
}

/// Files a push processor's TLS uses beyond the public roots: its own CA,
/// and a client certificate and key for mutual TLS. References (absolute
/// paths, mounted from Secrets where the chart runs it), never contents,
/// so nothing secret is stored or echoed back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessorTls {
    /// The CA that signed the processor's server certificate (PEM); when
    /// set, it is trusted instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Our client certificate for this processor (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
}

impl ProcessorTls {
    /// Absolute paths; a client certificate comes with its key.
    fn check(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        for (field, path) in [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ] {
            if let Some(p) = path
                && (!p.starts_with('/') || p.len() > 4096 || p.chars().any(char::is_control))
            {
                v.add(field, "must be an absolute path");
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            v.add(
                "client_key_file",
                "a client certificate and its key are given together",
            );
        }
        v.finish(|| ())
    }
}

/// Whether the URI's authority holds `user[:password]@`.
fn has_user_info(s: &str) -> bool {
    s.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.authority().map(|a| a.as_str().contains('@')))
        .unwrap_or(false)
}

fn valid_url(s: &str) -> bool {
    let Ok(uri) = s.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && !s.contains('#')
        && s.len() <= 2048
}

fn valid_endpoint(s: &str) -> bool {
    let Ok(uri) = s.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.port_u16().is_some()
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && s.len() <= 2048
}

/// A processor as declared by an operator (RPC or YAML), validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessorSpec {
    /// Slug.
    pub id: ProcessorId,
    /// Human-readable name.
    pub display_name: String,
    /// Relationship to the business.
    pub role: ProcessorRole,
    /// ISO 3166-1 alpha-2 (a cross-border transfer is recorded per line).
    pub country: String,
    /// Kinds it handles, sorted, non-empty.
    pub supported_kinds: Vec<RequestKind>,
    /// Identity types it may receive, sorted, non-empty.
    pub accepted_identity_types: Vec<IdentityType>,
    /// Delivery.
    pub adapter: AdapterConfig,
    /// Retries.
    pub retry_policy: RetryPolicy,
    /// Unacknowledged lease length (pull) before an instruction is offered again.
    #[serde(with = "millis")]
    pub ack_timeout: Duration,
    /// How long an acknowledged instruction may wait for its outcome.
    #[serde(with = "millis")]
    pub completion_timeout: Duration,
    /// Reminders before escalation.
    pub max_reminders: u32,
    /// Concurrent deliveries per orchestrator replica.
    pub max_in_flight: u32,
    /// How long before a request's deadline this processor's answer is
    /// due (see [`super::due_times`]).
    #[serde(with = "millis", default = "defaults::safety_margin")]
    pub safety_margin: Duration,
}

/// Defaults for the optional settings of a processor.
pub mod defaults {
    use std::time::Duration;
    /// Ack timeout.
    pub const ACK_TIMEOUT: Duration = Duration::from_secs(300);
    /// Completion timeout.
    pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Reminders.
    pub const MAX_REMINDERS: u32 = 3;
    /// In-flight deliveries.
    pub const MAX_IN_FLIGHT: u32 = 16;
    /// Safety margin before the request's deadline.
    pub const SAFETY_MARGIN: Duration = Duration::from_secs(7 * 24 * 3600);

    /// [`SAFETY_MARGIN`], for serde.
    pub fn safety_margin() -> Duration {
        SAFETY_MARGIN
    }
}

impl ProcessorSpec {
    /// Checks every cross-field rule; lists are sorted and de-duplicated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ProcessorId,
        display_name: &str,
        role: ProcessorRole,
        country: &str,
        mut supported_kinds: Vec<RequestKind>,
        mut accepted_identity_types: Vec<IdentityType>,
        adapter: AdapterConfig,
        retry_policy: RetryPolicy,
        ack_timeout: Option<Duration>,
        completion_timeout: Option<Duration>,
        max_reminders: Option<u32>,
        max_in_flight: Option<u32>,
        safety_margin: Option<Duration>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        v.take("display_name", check_len(display_name, 1, 200));
        if !is_country_code(country) {
            v.add(
                "country",
                "must be an ISO 3166-1 alpha-2 code (two upper-case letters)",
            );
        }
        supported_kinds.sort();
        supported_kinds.dedup();
        if supported_kinds.is_empty() {
            v.add("supported_kinds", "at least one kind is required");
        }
        accepted_identity_types.sort();
        accepted_identity_types.dedup();
        if accepted_identity_types.is_empty() {
            v.add(
                "accepted_identity_types",
                "at least one identity type is required",
            );
        }
        let ack_timeout = ack_timeout.unwrap_or(defaults::ACK_TIMEOUT);
        if !(Duration::from_secs(1)..=Duration::from_secs(7 * 86400)).contains(&ack_timeout) {
            v.add("ack_timeout", "must be between 1s and 7d");
        }
        let completion_timeout = completion_timeout.unwrap_or(defaults::COMPLETION_TIMEOUT);
        if !(Duration::from_secs(1)..=Duration::from_secs(90 * 86400)).contains(&completion_timeout)
        {
            v.add("completion_timeout", "must be between 1s and 90d");
        }
        let max_reminders = max_reminders.unwrap_or(defaults::MAX_REMINDERS);
        if max_reminders > 20 {
            v.add("max_reminders", "must be at most 20");
        }
        let max_in_flight = max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT);
        if !(1..=1000).contains(&max_in_flight) {
            v.add("max_in_flight", "must be between 1 and 1000");
        }
        let safety_margin = safety_margin.unwrap_or(defaults::SAFETY_MARGIN);
        if safety_margin > Duration::from_secs(90 * 86400) {
            v.add("safety_margin", "must be between 0s and 90d");
        }
        v.finish(|| Self {
            id,
            display_name: display_name.to_string(),
            role,
            country: country.to_string(),
            supported_kinds,
            accepted_identity_types,
            adapter,
            retry_policy,
            ack_timeout,
            completion_timeout,
            max_reminders,
            max_in_flight,
            safety_margin,
        })
    }

    /// Whether an instruction of `kind` for a subject with `types` can go
    /// to this processor: it handles the kind and accepts one of the types.
    pub fn can_take(&self, kind: RequestKind, types: &[IdentityType]) -> bool {
        self.supported_kinds.contains(&kind)
            && types
                .iter()
                .any(|t| self.accepted_identity_types.contains(t))
    }
}

/// Whether a processor receives new instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessorStatus {
    /// Receives new instructions.
    Active,
    /// No new instructions; in-flight ones continue.
    Disabled,
}

impl ProcessorStatus {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Disabled => "DISABLED",
        }
    }
}

/// A stored processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Processor {
    /// What was declared.
    pub spec: ProcessorSpec,
    /// Active or disabled.
    pub status: ProcessorStatus,
    /// Registration time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Who made the last change (`None` for changes made before changes
    /// were attributed).
    pub updated_by: Option<super::Actor>,
}

/// Serialises a `Duration` as integer milliseconds.
pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in ["http://127.0.0.1:5000", "https://dsr.vendor.example:443"] {
            assert!(AdapterConfig::grpc(ok, None, None).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1:5000",
            "ftp://x:1",
            "http://host",
            "http://host:1/path",
            "not a uri",
            "http://user:secret@host:1",
            "https://token@host:443",
        ] {
            assert!(AdapterConfig::grpc(bad, None, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn webhook_urls() {
        for ok in [
            "http://127.0.0.1:5000/hook",
            "https://dsr.vendor.example/hooks/dsr?tenant=7",
            "https://dsr.vendor.example",
        ] {
            assert!(AdapterConfig::webhook(ok, None, None).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "dsr.vendor.example/hook",
            "ftp://x:1/hook",
            "https://user:secret@host/hook",
            "https://host/hook#frag",
        ] {
            assert!(AdapterConfig::webhook(bad, None, None).is_err(), "{bad}");
        }
        let tls = ProcessorTls {
            ca_file: Some("/etc/ca.pem".into()),
            ..ProcessorTls::default()
        };
        assert!(AdapterConfig::webhook("http://127.0.0.1:1/h", None, Some(tls)).is_err());
    }
}
