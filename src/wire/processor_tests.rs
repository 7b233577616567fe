//! Tests of `processor`.

use super::*;
use crate::wire::fields;

/// A valid push processor on the wire.
pub(in crate::wire) fn valid() -> pb::Processor {
    pb::Processor {
        processor_id: "platform-vendor".into(),
        display_name: "Platform Vendor Inc.".into(),
        role: pb::ProcessorRole::Vendor as i32,
        country: "US".into(),
        supported_kinds: vec![
            pb::RequestKind::Delete as i32,
            pb::RequestKind::Access as i32,
        ],
        accepted_identity_types: vec![pb::IdentityType::Email as i32],
        adapter: Some(pb::Adapter {
            kind: Some(Kind::Grpc(pb::GrpcAdapter {
                endpoint: "https://dsr.vendor.example:443".into(),
                timeout: None,
                tls: None,
            })),
        }),
        ..Default::default()
    }
}

fn secs(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

#[test]
fn unset_fields_take_defaults_and_round_trip() {
    let spec = processor_spec(Some(valid())).unwrap();
    assert_eq!(
        spec.supported_kinds,
        [RequestKind::Access, RequestKind::Delete]
    );
    assert_eq!(spec.retry_policy, RetryPolicy::default());
    assert_eq!(spec.max_reminders, 3);
    assert_eq!(spec.max_in_flight, None, "adaptive");
    assert_eq!(
        spec.adapter,
        AdapterConfig::grpc("https://dsr.vendor.example:443", None, None).unwrap()
    );
    assert_eq!(processor_spec(Some(spec_pb(&spec))), Ok(spec));
}

#[test]
fn zero_retry_fields_mean_default() {
    let mut p = valid();
    p.retry_policy = Some(pb::RetryPolicy {
        initial_backoff: secs(0),
        max_backoff: None,
        multiplier: 0.0,
        max_attempts: 5,
    });
    let spec = processor_spec(Some(p)).unwrap();
    assert_eq!(
        spec.retry_policy,
        RetryPolicy::new(None, None, None, Some(5)).unwrap()
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    type Edit = fn(&mut pb::Processor);
    let cases: &[(Edit, &[&str])] = &[
        (
            |p| p.processor_id = "Vendor".into(),
            &["processor.processor_id"],
        ),
        (|p| p.display_name.clear(), &["processor.display_name"]),
        (|p| p.role = 0, &["processor.role"]),
        (|p| p.country = "usa".into(), &["processor.country"]),
        (
            |p| p.supported_kinds.clear(),
            &["processor.supported_kinds"],
        ),
        (
            |p| p.supported_kinds[1] = 0,
            &["processor.supported_kinds[1]"],
        ),
        (
            |p| p.accepted_identity_types = vec![99],
            &["processor.accepted_identity_types[0]"],
        ),
        (|p| p.adapter = None, &["processor.adapter"]),
        (
            |p| p.adapter = Some(pb::Adapter { kind: None }),
            &["processor.adapter"],
        ),
        (
            |p| {
                p.adapter = Some(pb::Adapter {
                    kind: Some(Kind::Grpc(pb::GrpcAdapter {
                        endpoint: "dsr.vendor.example".into(),
                        timeout: Some(prost_types::Duration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        tls: None,
                    })),
                })
            },
            &[
                "processor.adapter.grpc.timeout",
                "processor.adapter.grpc.endpoint",
            ],
        ),
        (
            |p| {
                p.adapter = Some(pb::Adapter {
                    kind: Some(Kind::Grpc(pb::GrpcAdapter {
                        endpoint: "https://dsr.vendor.example:443".into(),
                        timeout: secs(301),
                        tls: None,
                    })),
                })
            },
            &["processor.adapter.grpc.timeout"],
        ),
        (
            |p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: secs(10),
                    max_backoff: secs(1),
                    multiplier: 0.5,
                    max_attempts: 101,
                })
            },
            &[
                "processor.retry_policy.max_backoff",
                "processor.retry_policy.multiplier",
                "processor.retry_policy.max_attempts",
            ],
        ),
        (
            |p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: secs(-1),
                    ..Default::default()
                })
            },
            &["processor.retry_policy.initial_backoff"],
        ),
        (|p| p.ack_timeout = secs(0), &["processor.ack_timeout"]),
        (|p| p.ack_timeout = secs(-5), &["processor.ack_timeout"]),
        (
            |p| p.completion_timeout = secs(91 * 86400),
            &["processor.completion_timeout"],
        ),
        (|p| p.max_reminders = Some(21), &["processor.max_reminders"]),
        (|p| p.max_in_flight = 1001, &["processor.max_in_flight"]),
        (
            |p| p.max_deliveries_per_second = 100_001,
            &["processor.max_deliveries_per_second"],
        ),
        (
            |p| {
                p.processor_id.clear();
                p.role = 42;
                p.country.clear();
                p.adapter = None;
            },
            &[
                "processor.processor_id",
                "processor.role",
                "processor.adapter",
                "processor.country",
            ],
        ),
    ];
    for (edit, expected) in cases {
        let mut p = valid();
        edit(&mut p);
        assert_eq!(fields(processor_spec(Some(p))), *expected);
    }
    assert_eq!(fields(processor_spec(None)), ["processor"]);
}

#[test]
fn federation_and_opendsr_adapters_round_trip_and_name_their_faults() {
    let mut p = valid();
    p.adapter = Some(pb::Adapter {
        kind: Some(Kind::Dsr(pb::DsrAdapter {
            endpoint: "https://dsr.group.example:443".into(),
            timeout: None,
            tls: None,
            token_file: "/run/secrets/dsr/token".into(),
            poll_interval: secs(60),
        })),
    });
    let spec = processor_spec(Some(p.clone())).unwrap();
    assert_eq!(spec.adapter.poll_interval(), Some(Duration::from_secs(60)));
    assert_eq!(processor_spec(Some(spec_pb(&spec))), Ok(spec));

    let mut opendsr = valid();
    opendsr.adapter = Some(pb::Adapter {
        kind: Some(Kind::Opendsr(pb::OpenDsrAdapter {
            url: "https://opendsr.vendor.example".into(),
            timeout: None,
            tls: None,
            poll_interval: None,
        })),
    });
    let spec = processor_spec(Some(opendsr)).unwrap();
    assert_eq!(
        spec.adapter.poll_interval(),
        Some(AdapterConfig::DEFAULT_POLL_INTERVAL)
    );
    assert_eq!(processor_spec(Some(spec_pb(&spec))), Ok(spec));

    if let Some(Kind::Dsr(d)) = p.adapter.as_mut().and_then(|a| a.kind.as_mut()) {
        d.endpoint = "https://dsr.group.example/path".into();
        d.token_file = "token".into();
        d.poll_interval = secs(0);
    }
    assert_eq!(
        fields(processor_spec(Some(p))),
        [
            "processor.adapter.dsr.endpoint",
            "processor.adapter.dsr.token_file",
            "processor.adapter.dsr.poll_interval"
        ]
    );
}
