//! How instructions reach a processor: the adapter a processor is
//! registered with, and the checks of where push deliveries go (a gRPC
//! endpoint or a webhook URL) and with which TLS files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::processor::millis;
use super::{IdentityType, RequestKind, Violations};

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
    /// Federation: the processor is another dsr-orchestrator, given each
    /// instruction as a request of its own and polled for its record.
    Dsr {
        /// Its gRPC endpoint (the rules of a gRPC adapter's).
        endpoint: String,
        /// Deadline of one call.
        #[serde(with = "millis")]
        timeout: Duration,
        /// TLS files beyond the public roots (`https://` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<ProcessorTls>,
        /// The file holding our bearer token there (a reference, never
        /// the token).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_file: Option<String>,
        /// How often an open downstream request is asked for its state.
        #[serde(with = "millis")]
        poll_interval: Duration,
    },
    /// OpenDSR: each instruction is POSTed to the processor's
    /// `/opendsr/requests`; its status comes by signed callback and by
    /// polling.
    OpenDsr {
        /// The processor's base URL (the rules of a webhook URL).
        url: String,
        /// Deadline of one HTTP call.
        #[serde(with = "millis")]
        timeout: Duration,
        /// TLS files beyond the public roots (`https://` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<ProcessorTls>,
        /// How often an open OpenDSR request's status is polled.
        #[serde(with = "millis")]
        poll_interval: Duration,
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
        ENDPOINT
            .check(endpoint, timeout, tls)
            .map(|(timeout, tls)| Self::Grpc {
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
        URL.check(url, timeout, tls)
            .map(|(timeout, tls)| Self::Webhook {
                url: url.to_string(),
                timeout,
                tls,
            })
    }

    /// Default interval between polls of a federated or OpenDSR request.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);

    /// A federation adapter: another orchestrator's endpoint (checked as
    /// a gRPC adapter's), the file of our token there, the poll interval.
    pub fn dsr(
        endpoint: &str,
        timeout: Option<Duration>,
        tls: Option<ProcessorTls>,
        token_file: Option<String>,
        poll_interval: Option<Duration>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let checked = v.take("", ENDPOINT.check(endpoint, timeout, tls));
        if let Some(path) = &token_file
            && !absolute_path(path)
        {
            v.add("token_file", "must be an absolute path");
        }
        let poll_interval = v.take("poll_interval", poll_interval_or_default(poll_interval));
        match (checked, poll_interval) {
            (Some((timeout, tls)), Some(poll_interval)) if v.is_empty() => Ok(Self::Dsr {
                endpoint: endpoint.to_string(),
                timeout,
                tls,
                token_file,
                poll_interval,
            }),
            _ => Err(v),
        }
    }

    /// An OpenDSR adapter: the processor's base URL (checked as a webhook
    /// URL), the poll interval.
    pub fn opendsr(
        url: &str,
        timeout: Option<Duration>,
        tls: Option<ProcessorTls>,
        poll_interval: Option<Duration>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let checked = v.take("", URL.check(url, timeout, tls));
        let poll_interval = v.take("poll_interval", poll_interval_or_default(poll_interval));
        match (checked, poll_interval) {
            (Some((timeout, tls)), Some(poll_interval)) if v.is_empty() => Ok(Self::OpenDsr {
                url: url.to_string(),
                timeout,
                tls,
                poll_interval,
            }),
            _ => Err(v),
        }
    }

    /// The deadline of one delivery, for adapters the dispatcher pushes
    /// through; `None` for pull and manual.
    pub fn push_timeout(&self) -> Option<Duration> {
        match self {
            Self::Grpc { timeout, .. }
            | Self::Webhook { timeout, .. }
            | Self::Dsr { timeout, .. }
            | Self::OpenDsr { timeout, .. } => Some(*timeout),
            Self::Pull | Self::Manual => None,
        }
    }

    /// Whether the adapter follows an accepted instruction by asking: its
    /// reminders are polls, which spend none of the delivery budget.
    pub fn polls(&self) -> bool {
        self.poll_interval().is_some()
    }

    /// For adapters that follow an accepted instruction by asking
    /// (federation, OpenDSR): how often. Their reminders are these polls,
    /// unbounded in number; the instruction's due time ends them.
    pub fn poll_interval(&self) -> Option<Duration> {
        match self {
            Self::Dsr { poll_interval, .. } | Self::OpenDsr { poll_interval, .. } => {
                Some(*poll_interval)
            }
            _ => None,
        }
    }

    /// Whether the adapter's protocol has a word for requests of `kind`
    /// (OpenDSR: `access`, `erasure` and `portability` only).
    pub fn can_say_kind(&self, kind: RequestKind) -> bool {
        !matches!(self, Self::OpenDsr { .. })
            || matches!(
                kind,
                RequestKind::Access | RequestKind::Delete | RequestKind::Portability
            )
    }

    /// Whether the adapter's protocol has a word for identities of `kind`
    /// (OpenDSR: `email` and `controller_customer_id` only).
    pub fn can_say_identity(&self, kind: IdentityType) -> bool {
        !matches!(self, Self::OpenDsr { .. })
            || matches!(kind, IdentityType::Email | IdentityType::AccountId)
    }

    /// Stable name of the adapter kind (SQL column).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Grpc { .. } => "grpc",
            Self::Webhook { .. } => "webhook",
            Self::Dsr { .. } => "dsr",
            Self::OpenDsr { .. } => "opendsr",
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
                && !absolute_path(p)
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

/// The poll interval, 1 s to 1 d (default 5 min).
fn poll_interval_or_default(given: Option<Duration>) -> Result<Duration, Violations> {
    let interval = given.unwrap_or(AdapterConfig::DEFAULT_POLL_INTERVAL);
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(86_400) {
        return Err(Violations::one("", "must be between 1s and 1d"));
    }
    Ok(interval)
}

/// An absolute path of sane length without control characters.
fn absolute_path(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 4096 && !p.chars().any(char::is_control)
}

/// A gRPC endpoint (gRPC push, federation).
const ENDPOINT: Target = Target {
    field: "endpoint",
    valid: valid_endpoint,
    shape: "must be an http:// or https:// URI with a host and port and no path",
};

/// A URL (webhooks, OpenDSR).
const URL: Target = Target {
    field: "url",
    valid: valid_url,
    shape: "must be an http:// or https:// URL with a host, without a fragment, \
            at most 2048 characters",
};

/// Where a push adapter delivers (a gRPC endpoint or a URL): the field it
/// is given in, its own shape, and the rules both share.
struct Target {
    field: &'static str,
    valid: fn(&str) -> bool,
    shape: &'static str,
}

impl Target {
    /// Checks `address`, the timeout (default 10 s) and the TLS files;
    /// returns the timeout and the files.
    fn check(
        &self,
        address: &str,
        timeout: Option<Duration>,
        tls: Option<ProcessorTls>,
    ) -> Result<(Duration, Option<ProcessorTls>), Violations> {
        let mut v = Violations::new();
        if let Some(tls) = &tls {
            v.take("tls", tls.check());
            if !is_https(address) {
                v.add(
                    "tls",
                    format!("is only used with an https:// {}", self.field),
                );
            }
        }
        if has_user_info(address) {
            v.add(
                self.field,
                format!(
                    "must not hold user information (user:password@): an {} carries no credentials",
                    self.field
                ),
            );
        } else if !(self.valid)(address) {
            v.add(self.field, self.shape);
        }
        let timeout = timeout.unwrap_or(AdapterConfig::DEFAULT_GRPC_TIMEOUT);
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(300) {
            v.add("timeout", "must be between 100ms and 5m");
        }
        v.finish(|| (timeout, tls))
    }
}

/// Whether `url` is plaintext `http://`, its scheme in any case (a URL's
/// scheme is case-insensitive: `HTTP://` is plaintext too).
pub fn is_plaintext(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// Whether `url` is `https://`, its scheme in any case.
pub fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
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

#[cfg(test)]
#[path = "adapter_tests.rs"]
mod tests;
