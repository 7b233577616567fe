//! No personal data leaves the server but towards the processors that
//! accept it: the real binary, logging at `trace` and exporting its
//! traces and metrics over OTLP to a collector in this test, is driven
//! through success, retries, failures, escalation, validation errors and
//! cancellation with distinctive identifiers; none of them appears in its
//! log output, in a span, in a metric, in `/metrics` or in an error
//! message a caller received. (A test binary of its own: it owns the
//! process's environment.)

#[allow(dead_code, unused_imports)] // the api binary uses the rest of the harness
#[path = "api/harness/mod.rs"]
mod harness;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsr_orchestrator::pb;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::server::TcpIncoming;

use harness::*;

/// Everything the collector received, as debug text.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<String>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap()
            .push_str(&format!("{:?}", request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap()
            .push_str(&format!("{:?}", request.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Kills a process when dropped (a failing test leaves no server behind;
/// after a graceful stop it finds none).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

/// The identifiers that must not leak, as written and as they might be
/// rewritten (normal forms, fragments).
const CANARIES: &[&str] = &[
    "pii-canary-7f3a@example.org",
    "PII-CANARY-7F3A",
    "555 0199 731",
    "5550199731",
    "Canary Q. Person",
    "canary-bell-9d2e@example.org",
    "canary-retry-41b0@example.org",
];

fn identities(email: &str) -> Vec<pb::SubjectIdentity> {
    vec![
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Email as i32,
            value: email.into(),
        },
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Phone as i32,
            value: "+1 555 0199 731".into(),
        },
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Name as i32,
            value: "Canary Q. Person".into(),
        },
    ]
}

fn request(email: &str, processors: &[&str]) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        subject_identities: identities(email),
        processor_ids: processors.iter().map(|p| p.to_string()).collect(),
        ..deletion(email)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_identifier_leaves_in_logs_traces_metrics_or_errors() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsr-orchestrator"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DSR_DATABASE_URL",
            format!("sqlite://{}/dsr.db", dir.path().display()),
        )
        .env("DSR_LISTEN_ADDR", "127.0.0.1:0")
        .env("DSR_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .env("DSR_LOG_FORMAT", "json")
        .env("DSR_POLL_INTERVAL", "50ms")
        .env("DSR_LEASE_MARGIN", "1s")
        .env("DSR_KEYS", &*TEST_KEYS)
        .env("RUST_LOG", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dsr-orchestrator");
    // Killed if the test fails before it stops the server itself.
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    // Everything it writes, kept; its addresses read from its log.
    let output = Arc::new(Mutex::new(String::new()));
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        let addrs_tx = addrs_tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut line = String::new();
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                output.lock().unwrap().push_str(&text);
                line.push_str(&text);
                while let Some(end) = line.find('\n') {
                    let one: String = line.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&one)
                        && v["message"] == "serving gRPC"
                    {
                        let _ = addrs_tx.send((
                            v["addr"].as_str().unwrap().to_string(),
                            v["admin"].as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        });
    }
    let (addr, admin) = addrs_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server starts");
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut requests = pb::request_service_client::RequestServiceClient::new(channel.clone());
    let processors = pb::processor_service_client::ProcessorServiceClient::new(channel.clone());
    let mut instructions =
        pb::instruction_service_client::InstructionServiceClient::new(channel.clone());
    let mut protection =
        pb::data_protection_service_client::DataProtectionServiceClient::new(channel.clone());
    let mut errors: Vec<String> = Vec::new();

    // Processors: one that fails twice (echoing what it was sent) then
    // completes, one that refuses for good (echoing too), a pull one, a
    // manual one.
    let flaky = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    flaky.script([
        Reply::Echo(tonic::Code::Unavailable),
        Reply::Echo(tonic::Code::Unavailable),
    ]);
    let broken = FakeProcessor::start(Reply::Echo(tonic::Code::InvalidArgument)).await;
    let register = |p: pb::Processor| {
        let mut processors = processors.clone();
        async move {
            processors
                .register_processor(pb::RegisterProcessorRequest { processor: Some(p) })
                .await
                .unwrap()
                .into_inner()
                .callback_token
        }
    };
    register(push_processor("flaky", &flaky.endpoint())).await;
    register(push_processor("broken", &broken.endpoint())).await;
    let token = register(pull_processor("puller", 60_000)).await;
    let mut manual = pull_processor("desk", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(manual).await;

    // Success after retries, and an escalation.
    let done = requests
        .submit_request(request("pii-canary-7f3a@example.org", &["flaky"]))
        .await
        .unwrap()
        .into_inner();
    let escalated = requests
        .submit_request(request("canary-retry-41b0@example.org", &["broken"]))
        .await
        .unwrap()
        .into_inner();
    // Pulled, failed with a reason that echoes the identity.
    let pulled_req = requests
        .submit_request(request("canary-bell-9d2e@example.org", &["puller"]))
        .await
        .unwrap()
        .into_inner();
    // Cancelled while with an operator.
    let cancelled = requests
        .submit_request(request("pii-canary-7f3a@example.org", &["desk"]))
        .await
        .unwrap()
        .into_inner();
    let pulled = pull_with(&mut instructions, &token).await;
    let fail = instructions
        .complete_instruction(authed(
            &token,
            pb::CompleteInstructionRequest {
                instruction_id: pulled[0].instruction_id.clone(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Failed as i32,
                    reason: "no account for canary-bell-9d2e@example.org".into(),
                    ..Default::default()
                }),
            },
        ))
        .await;
    assert!(fail.is_ok(), "{fail:?}");
    requests
        .cancel_request(pb::CancelRequestRequest {
            request_id: cancelled.request_id.clone(),
            reason: "withdrawn by the person".into(),
        })
        .await
        .unwrap();

    // Validation errors whose inputs carry identifiers.
    let mut bad = request("pii-canary-7f3a@example.org", &[]);
    bad.subject_identities[1].r#type = 42;
    bad.subject_identities[2].value = "Canary Q. Person\u{7}".into();
    bad.request_id = "pii-canary-7f3a@example.org".into();
    errors.push(format!(
        "{:?}",
        requests.submit_request(bad).await.unwrap_err()
    ));
    let mut dup = request("pii-canary-7f3a@example.org", &[]);
    dup.subject_identities
        .push(dup.subject_identities[0].clone());
    errors.push(format!(
        "{:?}",
        requests.submit_request(dup).await.unwrap_err()
    ));
    errors.push(format!(
        "{:?}",
        requests
            .submit_request(pb::SubmitRequestRequest {
                request_id: done.request_id.clone(),
                ..request("canary-bell-9d2e@example.org", &["flaky"])
            })
            .await
            .unwrap_err()
    ));
    errors.push(format!(
        "{:?}",
        protection
            .check_suppression(pb::CheckSuppressionRequest {
                identities: vec![pb::SubjectIdentity {
                    r#type: 0,
                    value: "pii-canary-7f3a@example.org".into(),
                }],
            })
            .await
            .unwrap_err()
    ));
    protection
        .check_suppression(pb::CheckSuppressionRequest {
            identities: identities("pii-canary-7f3a@example.org"),
        })
        .await
        .unwrap();

    watch_until_closed(&mut requests, &done.request_id).await;
    watch_until_closed(&mut requests, &pulled_req.request_id).await;
    wait_escalated(&mut requests, &escalated.request_id).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Stop gracefully, so the last spans and metrics are exported.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    let logs = output.lock().unwrap().clone();
    let exported = collector.0.lock().unwrap().clone();
    assert!(logs.contains("\"level\":\"TRACE\""), "logging at trace");
    assert!(logs.len() > 100_000, "a trace log of {} bytes", logs.len());
    assert!(exported.contains("SubmitRequest"), "spans were exported");
    assert!(
        exported.contains("dsr_requests_submitted"),
        "metrics were exported"
    );
    assert!(metrics.contains("dsr_requests_submitted_total"));
    for (what, text) in [
        ("the log", &logs),
        ("the OTLP export", &exported),
        ("/metrics", &metrics),
        ("an error answer", &errors.join("\n")),
    ] {
        let lower = text.to_lowercase();
        for canary in CANARIES {
            assert!(
                !lower.contains(&canary.to_lowercase()),
                "{canary:?} found in {what}"
            );
        }
    }
}

async fn pull_with(
    client: &mut pb::instruction_service_client::InstructionServiceClient<
        tonic::transport::Channel,
    >,
    token: &str,
) -> Vec<pb::Instruction> {
    client
        .pull_instructions(authed(
            token,
            pb::PullInstructionsRequest {
                max_instructions: 10,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .instructions
}

async fn watch_until_closed(
    client: &mut pb::request_service_client::RequestServiceClient<tonic::transport::Channel>,
    id: &str,
) {
    use tokio_stream::StreamExt;
    let mut stream = client
        .watch_request(pb::WatchRequestRequest {
            request_id: id.into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let done = async { while stream.next().await.is_some() {} };
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("the request finishes");
}

async fn wait_escalated(
    client: &mut pb::request_service_client::RequestServiceClient<tonic::transport::Channel>,
    id: &str,
) {
    use tokio_stream::StreamExt;
    let mut stream = client
        .watch_request(pb::WatchRequestRequest {
            request_id: id.into(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let escalated = async {
        while let Some(Ok(e)) = stream.next().await {
            if e.instruction
                .is_some_and(|i| i.state() == pb::InstructionState::Escalated)
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), escalated)
        .await
        .expect("the instruction escalates");
}
