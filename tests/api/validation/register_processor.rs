//! RegisterProcessor: every field of `Processor`, alone and a few at once.

use dsr_orchestrator::pb;

use super::*;
use crate::backends;
use crate::harness::*;

backends!(
    register_processor_table,
    a_refusal_of_many_violations_fits_every_client
);

/// RegisterProcessor: every field of `Processor`.
async fn register_processor_table(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let endpoint = |e: &'static str| registration(move |p| p.adapter = grpc_adapter(e, 2000));
    let cases: Table<pb::RegisterProcessorRequest> = vec![
        (
            "missing processor",
            pb::RegisterProcessorRequest { processor: None },
            &["processor"],
        ),
        (
            "missing processor_id",
            registration(|p| p.processor_id.clear()),
            &["processor.processor_id"],
        ),
        (
            "upper-case processor_id",
            registration(|p| p.processor_id = "NewComer".into()),
            &["processor.processor_id"],
        ),
        (
            "64-character processor_id",
            registration(|p| p.processor_id = "p".repeat(64)),
            &["processor.processor_id"],
        ),
        (
            "processor_id ending with '-'",
            registration(|p| p.processor_id = "newcomer-".into()),
            &["processor.processor_id"],
        ),
        (
            "missing display_name",
            registration(|p| p.display_name.clear()),
            &["processor.display_name"],
        ),
        (
            "201-character display_name",
            registration(|p| p.display_name = "d".repeat(201)),
            &["processor.display_name"],
        ),
        (
            "display_name with a right-to-left override",
            registration(|p| p.display_name = "Vendor \u{202e}cni".into()),
            &["processor.display_name"],
        ),
        (
            "missing role",
            registration(|p| p.role = 0),
            &["processor.role"],
        ),
        (
            "unknown role",
            registration(|p| p.role = 99),
            &["processor.role"],
        ),
        (
            "lower-case country",
            registration(|p| p.country = "jp".into()),
            &["processor.country"],
        ),
        (
            "three-letter country",
            registration(|p| p.country = "JPN".into()),
            &["processor.country"],
        ),
        (
            "a country code of the right shape that is not assigned",
            registration(|p| p.country = "XX".into()),
            &["processor.country"],
        ),
        (
            "missing country",
            registration(|p| p.country.clear()),
            &["processor.country"],
        ),
        (
            "no supported kinds",
            registration(|p| p.supported_kinds.clear()),
            &["processor.supported_kinds"],
        ),
        (
            "unknown supported kind",
            registration(|p| p.supported_kinds = vec![2, 99]),
            &["processor.supported_kinds[1]"],
        ),
        (
            "no accepted identity types",
            registration(|p| p.accepted_identity_types.clear()),
            &["processor.accepted_identity_types"],
        ),
        (
            "unspecified identity type",
            registration(|p| p.accepted_identity_types = vec![0]),
            &["processor.accepted_identity_types[0]"],
        ),
        (
            "missing adapter",
            registration(|p| p.adapter = None),
            &["processor.adapter"],
        ),
        (
            "adapter without a kind",
            registration(|p| p.adapter = Some(pb::Adapter { kind: None })),
            &["processor.adapter"],
        ),
        (
            "endpoint without scheme",
            endpoint("dsr.vendor.example:443"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with another scheme",
            endpoint("ftp://dsr.vendor.example:21"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint without port",
            endpoint("https://dsr.vendor.example"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with a path",
            endpoint("https://dsr.vendor.example:443/dsr"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "empty endpoint",
            endpoint(""),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with user and password",
            endpoint("https://vendor:s3cret-pw@dsr.vendor.example:443"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint with a token as user",
            endpoint("http://tok3n@127.0.0.1:9"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint at the cloud metadata address",
            endpoint("https://169.254.169.254:443"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "endpoint at a metadata service's name",
            endpoint("https://metadata.google.internal:443"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "plaintext endpoint beyond loopback",
            endpoint("http://10.1.2.3:8080"),
            &["processor.adapter.grpc.endpoint"],
        ),
        (
            "TLS files for a plaintext endpoint",
            registration(|p| {
                p.adapter = Some(pb::Adapter {
                    kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
                        endpoint: "http://127.0.0.1:9".into(),
                        timeout: None,
                        tls: Some(pb::ProcessorTls {
                            ca_file: "/etc/dsr/ca.crt".into(),
                            ..Default::default()
                        }),
                    })),
                })
            }),
            &["processor.adapter.grpc.tls"],
        ),
        (
            "a client certificate without its key",
            registration(|p| {
                p.adapter = Some(pb::Adapter {
                    kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
                        endpoint: "https://localhost:9".into(),
                        timeout: None,
                        tls: Some(pb::ProcessorTls {
                            client_cert_file: "/etc/dsr/client.crt".into(),
                            ..Default::default()
                        }),
                    })),
                })
            }),
            &["processor.adapter.grpc.tls.client_key_file"],
        ),
        (
            "grpc timeout under 100ms",
            registration(|p| p.adapter = grpc_adapter("http://127.0.0.1:9", 99)),
            &["processor.adapter.grpc.timeout"],
        ),
        (
            "retry policy out of range",
            registration(|p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: ms(2000),
                    max_backoff: ms(1000),
                    multiplier: 0.5,
                    max_attempts: 101,
                })
            }),
            &[
                "processor.retry_policy.max_backoff",
                "processor.retry_policy.multiplier",
                "processor.retry_policy.max_attempts",
            ],
        ),
        (
            "negative initial backoff",
            registration(|p| {
                p.retry_policy = Some(pb::RetryPolicy {
                    initial_backoff: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
            }),
            &["processor.retry_policy.initial_backoff"],
        ),
        (
            "ack_timeout under 1s",
            registration(|p| p.ack_timeout = ms(999)),
            &["processor.ack_timeout"],
        ),
        (
            "completion_timeout over 90d",
            registration(|p| p.completion_timeout = days(91)),
            &["processor.completion_timeout"],
        ),
        (
            "21 reminders",
            registration(|p| p.max_reminders = Some(21)),
            &["processor.max_reminders"],
        ),
        (
            "1001 in flight",
            registration(|p| p.max_in_flight = 1001),
            &["processor.max_in_flight"],
        ),
        (
            "several fields wrong",
            registration(|p| {
                p.processor_id = "X".into();
                p.role = 42;
                p.country = "jp".into();
                p.adapter = grpc_adapter("not a uri", 2000);
            }),
            &[
                "processor.processor_id",
                "processor.role",
                "processor.adapter.grpc.endpoint",
                "processor.country",
            ],
        ),
    ];
    let before = all_processors(&app).await;
    let mut client = app.processors.clone();
    expect_rejections(
        "RegisterProcessor",
        cases,
        async |msg| client.register_processor(msg).await,
        async || all_processors(&app).await,
    )
    .await;
    // The valid registration the cases were made from is accepted.
    client
        .register_processor(registration(|_| {}))
        .await
        .unwrap();
    assert_eq!(all_processors(&app).await.len(), before.len() + 1);
    app.stop().await;
}

/// Thousands of bad values are still an `INVALID_ARGUMENT` every client
/// reads: the answer lists the first violations, within what gRPC's C core
/// takes of trailers (beyond 8 KiB Python's client may report
/// `RESOURCE_EXHAUSTED`), and says how many more there are.
async fn a_refusal_of_many_violations_fits_every_client(db: TestDb) {
    let (app, _) = app_with_pull_processor(&db).await;
    let status = app
        .processors
        .clone()
        .register_processor(registration(|p| {
            p.supported_kinds = vec![99; 2000];
            p.accepted_identity_types = vec![99; 2000];
        }))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violations(&status);
    assert!(fields.len() > 10 && fields.len() < 200, "{}", fields.len());
    assert_eq!(fields[0], "processor.supported_kinds[0]");
    let mut headers = tonic::codegen::http::HeaderMap::new();
    status.add_header(&mut headers).unwrap();
    let trailers: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    assert!(trailers < 7 * 1024, "{trailers} bytes");
    assert!(
        status.message().contains(&format!(
            "(the details list the first {} of 4000)",
            fields.len()
        )),
        "{}",
        status.message()
    );
    let listed: Vec<String> = all_processors(&app)
        .await
        .into_iter()
        .map(|p| p.processor_id)
        .collect();
    assert_eq!(listed, ["intake"]);
    app.stop().await;
}
