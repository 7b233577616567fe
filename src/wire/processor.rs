//! Processors: the `Processor` message in (registration, and the merged
//! result of an update) and out.
//!
//! proto3 scalars cannot be unset, so zero reads as "take the default"
//! wherever zero is not a meaningful setting: `max_in_flight`, the retry
//! policy's `multiplier` and `max_attempts`, and — because its messages are
//! all-or-nothing defaults — a zero retry duration. `max_reminders`, whose
//! valid range includes 0, is an `optional` field instead: unset means the
//! default.

use std::time::Duration;

use super::enums::{ProtoEnum, numbers, required, required_each};
use super::time::{duration, duration_pb, opt_duration};
use super::{conclude, opt_timestamp, within};
use crate::domain::{
    AdapterConfig, DeliveryLimits, IdentityType, Processor, ProcessorId, ProcessorRole,
    ProcessorSpec, ProcessorTls, RequestKind, RetryPolicy, Violations,
};
use crate::pb;
use crate::pb::adapter::Kind;

/// Checks a `Processor` message as declared by an operator. Paths are
/// prefixed with `processor.`; output-only fields are ignored; unset
/// optional fields take their defaults.
pub fn processor_spec(p: Option<pb::Processor>) -> Result<ProcessorSpec, Violations> {
    match p {
        Some(p) => within("processor", spec(p)),
        None => Err(Violations::one("processor", "is required")),
    }
}

/// [`processor_spec`] with paths relative to the message.
fn spec(p: pb::Processor) -> Result<ProcessorSpec, Violations> {
    let mut v = Violations::new();
    let id = v.take("processor_id", ProcessorId::parse(&p.processor_id));
    let role = v.take("role", required::<ProcessorRole>(p.role));
    let kinds = v.take(
        "supported_kinds",
        required_each::<RequestKind>(&p.supported_kinds),
    );
    let types = v.take(
        "accepted_identity_types",
        required_each::<IdentityType>(&p.accepted_identity_types),
    );
    let adapter = v.take("adapter", adapter(p.adapter));
    let retry_policy = v.take("retry_policy", retry_policy(p.retry_policy));
    let ack_timeout = v.take("ack_timeout", opt_duration(p.ack_timeout));
    let completion_timeout = v.take("completion_timeout", opt_duration(p.completion_timeout));
    let safety_margin = v.take("safety_margin", opt_duration(p.safety_margin));

    // Stand-ins for failed parts, so the constructor still checks the rest
    // (see the `convert` module docs). A bad duration becomes "unset" so
    // the constructor does not report it a second time.
    let Some(id) = id.or_else(|| ProcessorId::parse("stand-in").ok()) else {
        return Err(v);
    };
    let spec = ProcessorSpec::new(
        id,
        &p.display_name,
        role.unwrap_or(ProcessorRole::InternalSystem),
        &p.country,
        kinds.unwrap_or_else(|| vec![RequestKind::Access]),
        types.unwrap_or_else(|| vec![IdentityType::Other]),
        adapter.unwrap_or(AdapterConfig::Manual),
        retry_policy.unwrap_or_default(),
        ack_timeout.flatten(),
        completion_timeout.flatten(),
        p.max_reminders,
        DeliveryLimits {
            max_in_flight: unless_zero(p.max_in_flight),
            max_deliveries_per_second: p.max_deliveries_per_second,
        },
        safety_margin.flatten(),
    );
    let spec = v.take("", spec);
    conclude(v, spec)
}

/// `None` for the proto3 zero value.
fn unless_zero(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}

/// The adapter oneof; paths like `grpc.endpoint`.
fn adapter(a: Option<pb::Adapter>) -> Result<AdapterConfig, Violations> {
    match a.and_then(|a| a.kind) {
        None => Err(Violations::one(
            "",
            "is required (one of grpc, webhook, dsr, opendsr, pull or manual)",
        )),
        Some(Kind::Pull(_)) => Ok(AdapterConfig::Pull),
        Some(Kind::Manual(_)) => Ok(AdapterConfig::Manual),
        Some(Kind::Grpc(g)) => {
            let mut v = Violations::new();
            let timeout = v.take("grpc.timeout", opt_duration(g.timeout));
            let grpc = v.take(
                "grpc",
                AdapterConfig::grpc(&g.endpoint, timeout.flatten(), tls_files(g.tls)),
            );
            conclude(v, grpc)
        }
        Some(Kind::Webhook(w)) => {
            let mut v = Violations::new();
            let timeout = v.take("webhook.timeout", opt_duration(w.timeout));
            let webhook = v.take(
                "webhook",
                AdapterConfig::webhook(&w.url, timeout.flatten(), tls_files(w.tls)),
            );
            conclude(v, webhook)
        }
        Some(Kind::Dsr(d)) => {
            let mut v = Violations::new();
            let timeout = v.take("dsr.timeout", opt_duration(d.timeout));
            let poll = v.take("dsr.poll_interval", opt_duration(d.poll_interval));
            let token_file = (!d.token_file.is_empty()).then_some(d.token_file);
            let dsr = v.take(
                "dsr",
                AdapterConfig::dsr(
                    &d.endpoint,
                    timeout.flatten(),
                    tls_files(d.tls),
                    token_file,
                    poll.flatten(),
                ),
            );
            conclude(v, dsr)
        }
        Some(Kind::Opendsr(o)) => {
            let mut v = Violations::new();
            let timeout = v.take("opendsr.timeout", opt_duration(o.timeout));
            let poll = v.take("opendsr.poll_interval", opt_duration(o.poll_interval));
            let opendsr = v.take(
                "opendsr",
                AdapterConfig::opendsr(&o.url, timeout.flatten(), tls_files(o.tls), poll.flatten()),
            );
            conclude(v, opendsr)
        }
    }
}

/// The TLS files of a push adapter; empty paths are unset.
fn tls_files(tls: Option<pb::ProcessorTls>) -> Option<ProcessorTls> {
    tls.map(|t| {
        let path = |p: String| (!p.is_empty()).then_some(p);
        ProcessorTls {
            ca_file: path(t.ca_file),
            client_cert_file: path(t.client_cert_file),
            client_key_file: path(t.client_key_file),
        }
    })
}

/// The TLS files as sent.
fn tls_pb(tls: &Option<ProcessorTls>) -> Option<pb::ProcessorTls> {
    tls.as_ref().map(|t| pb::ProcessorTls {
        ca_file: t.ca_file.clone().unwrap_or_default(),
        client_cert_file: t.client_cert_file.clone().unwrap_or_default(),
        client_key_file: t.client_key_file.clone().unwrap_or_default(),
    })
}

/// The optional retry policy; zero fields take the defaults.
fn retry_policy(r: Option<pb::RetryPolicy>) -> Result<RetryPolicy, Violations> {
    let Some(r) = r else {
        return Ok(RetryPolicy::default());
    };
    let nonzero = |d: Option<prost_types::Duration>| -> Result<Option<Duration>, Violations> {
        match d.as_ref().map(duration).transpose()? {
            Some(Duration::ZERO) | None => Ok(None),
            Some(d) => Ok(Some(d)),
        }
    };
    let mut v = Violations::new();
    let initial = v.take("initial_backoff", nonzero(r.initial_backoff));
    let max = v.take("max_backoff", nonzero(r.max_backoff));
    let multiplier = (r.multiplier != 0.0).then_some(r.multiplier);
    let policy = v.take(
        "",
        RetryPolicy::new(
            initial.flatten(),
            max.flatten(),
            multiplier,
            unless_zero(r.max_attempts),
        ),
    );
    conclude(v, policy)
}

/// The wire form of a stored processor, output-only fields included.
pub fn processor(p: &Processor) -> pb::Processor {
    pb::Processor {
        status: p.status.number(),
        created_at: opt_timestamp(Some(p.created_at)),
        updated_at: opt_timestamp(Some(p.updated_at)),
        updated_by: p
            .updated_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ..spec_pb(&p.spec)
    }
}

/// The wire form of a declared processor, output-only fields unset. Every
/// optional field is written out, so reading it back gives the same spec.
pub(super) fn spec_pb(s: &ProcessorSpec) -> pb::Processor {
    pb::Processor {
        processor_id: s.id.to_string(),
        display_name: s.display_name.clone(),
        role: s.role.number(),
        country: s.country.clone(),
        supported_kinds: numbers(&s.supported_kinds),
        accepted_identity_types: numbers(&s.accepted_identity_types),
        adapter: Some(adapter_pb(&s.adapter)),
        retry_policy: Some(pb::RetryPolicy {
            initial_backoff: Some(duration_pb(s.retry_policy.initial_backoff)),
            max_backoff: Some(duration_pb(s.retry_policy.max_backoff)),
            multiplier: s.retry_policy.multiplier,
            max_attempts: s.retry_policy.max_attempts,
        }),
        ack_timeout: Some(duration_pb(s.ack_timeout)),
        completion_timeout: Some(duration_pb(s.completion_timeout)),
        max_reminders: Some(s.max_reminders),
        max_in_flight: s.max_in_flight.unwrap_or(0),
        max_deliveries_per_second: s.max_deliveries_per_second,
        safety_margin: Some(duration_pb(s.safety_margin)),
        status: 0,
        created_at: None,
        updated_at: None,
        updated_by: String::new(),
        circuit_breaker: None,
    }
}

/// A push processor's circuit breaker as shown: closed without a row, open
/// or half open (its cool-down over) with one. `None` for pull and manual
/// processors, which have none.
pub fn circuit_breaker(
    adapter: &AdapterConfig,
    breaker: Option<&crate::store::Breaker>,
    now: crate::domain::Timestamp,
) -> Option<pb::CircuitBreaker> {
    use pb::circuit_breaker::State;
    adapter.push_timeout()?;
    Some(match breaker {
        None => pb::CircuitBreaker {
            state: State::Closed as i32,
            ..Default::default()
        },
        Some(b) => pb::CircuitBreaker {
            state: if b.half_open(now) {
                State::HalfOpen
            } else {
                State::Open
            } as i32,
            opened_at: Some(super::timestamp(b.opened_at)),
            retry_at: Some(super::timestamp(b.retry_at)),
            failures: b.failures,
        },
    })
}

fn adapter_pb(a: &AdapterConfig) -> pb::Adapter {
    let kind = match a {
        AdapterConfig::Grpc {
            endpoint,
            timeout,
            tls,
        } => Kind::Grpc(pb::GrpcAdapter {
            endpoint: endpoint.clone(),
            timeout: Some(duration_pb(*timeout)),
            tls: tls_pb(tls),
        }),
        AdapterConfig::Webhook { url, timeout, tls } => Kind::Webhook(pb::WebhookAdapter {
            url: url.clone(),
            timeout: Some(duration_pb(*timeout)),
            tls: tls_pb(tls),
        }),
        AdapterConfig::Dsr {
            endpoint,
            timeout,
            tls,
            token_file,
            poll_interval,
        } => Kind::Dsr(pb::DsrAdapter {
            endpoint: endpoint.clone(),
            timeout: Some(duration_pb(*timeout)),
            tls: tls_pb(tls),
            token_file: token_file.clone().unwrap_or_default(),
            poll_interval: Some(duration_pb(*poll_interval)),
        }),
        AdapterConfig::OpenDsr {
            url,
            timeout,
            tls,
            poll_interval,
        } => Kind::Opendsr(pb::OpenDsrAdapter {
            url: url.clone(),
            timeout: Some(duration_pb(*timeout)),
            tls: tls_pb(tls),
            poll_interval: Some(duration_pb(*poll_interval)),
        }),
        AdapterConfig::Pull => Kind::Pull(pb::PullAdapter {}),
        AdapterConfig::Manual => Kind::Manual(pb::ManualAdapter {}),
    };
    pb::Adapter { kind: Some(kind) }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
pub(super) mod tests;
