//! Tracing end to end, in a test binary of its own (telemetry is global to
//! a process): an in-process OTLP collector receives the spans of one
//! request submitted with an incoming `traceparent` — the RPC, the store
//! transaction, the deliveries — and the test processor sees the same trace
//! in the metadata it received. No span carries the subject's data.

#[allow(dead_code, unused_imports)] // the api binary uses the rest of the harness
#[path = "api/harness/mod.rs"]
mod harness;

use std::sync::{Arc, Mutex};

use dsr_orchestrator::pb;
use dsr_orchestrator::telemetry::LogFormat;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::transport::server::TcpIncoming;

use harness::*;

/// Collects every exported span.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_from_the_caller_through_every_processor() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    // SAFETY: set before anything reads the environment; this binary runs
    // this one test.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_SERVICE_NAME", "dsr-under-test");
    }
    let telemetry = dsr_orchestrator::telemetry::init(LogFormat::Text).unwrap();
    assert!(telemetry.tracing_exported());

    let db = TestDb::sqlite().await;
    let app = TestApp::spawn(&db).await;
    let fakes = [
        FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await,
        FakeProcessor::start(Reply::done(pb::Outcome::NoData)).await,
    ];
    for (n, f) in fakes.iter().enumerate() {
        register(&app, push_processor(&format!("traced-{n}"), &f.endpoint())).await;
    }
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    register(&app, webhook_processor("traced-hook", &hook.url())).await;
    let mut call = tonic::Request::new(deletion("alice@example.com"));
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let req = app
        .requests
        .clone()
        .submit_request(call)
        .await
        .unwrap()
        .into_inner();
    watch_to_end(&app.requests, &req.request_id).await;

    // The processor side: each delivery carried the caller's trace.
    for f in &fakes {
        let seen = f.traceparents();
        assert_eq!(seen.len(), 1);
        let tp = seen[0].as_deref().expect("delivery carried a traceparent");
        assert_eq!(tp.split('-').nth(1), Some(TRACE), "{tp}");
    }
    let posted = hook.received();
    assert_eq!(posted.len(), 1);
    let tp = posted[0]
        .traceparent
        .as_deref()
        .expect("webhook carried a traceparent");
    assert_eq!(tp.split('-').nth(1), Some(TRACE), "{tp}");

    app.stop().await;
    tokio::task::spawn_blocking(move || telemetry.force_flush())
        .await
        .unwrap();
    let spans = collector.0.lock().unwrap().clone();
    let in_trace: Vec<&Span> = spans
        .iter()
        .filter(|s| hex::encode(&s.trace_id) == TRACE)
        .collect();
    let names: Vec<&str> = in_trace.iter().map(|s| s.name.as_str()).collect();

    let rpc = in_trace
        .iter()
        .find(|s| s.name == "dsr.v1.RequestService/SubmitRequest")
        .unwrap_or_else(|| panic!("no SubmitRequest span in the trace; have {names:?}"));
    assert_eq!(
        hex::encode(&rpc.parent_span_id),
        "00f067aa0ba902b7",
        "continues the caller's span"
    );
    assert_eq!(
        attr(rpc, "rpc.method").map(text).as_deref(),
        Some("SubmitRequest")
    );
    assert!(names.contains(&"store.submit"), "{names:?}");
    let deliveries: Vec<&&Span> = in_trace.iter().filter(|s| s.name == "deliver").collect();
    assert_eq!(deliveries.len(), 3, "{names:?}");
    for d in &deliveries {
        assert!(
            d.links.iter().any(|l| hex::encode(&l.trace_id) == TRACE),
            "a delivery links back to the submitting trace"
        );
        let processor = attr(d, "processor_id").map(text).unwrap();
        assert!(processor.starts_with("traced-"), "{processor}");
    }

    // No span, anywhere, carries the subject's identities.
    for s in &spans {
        for kv in &s.attributes {
            let v = kv
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map(text)
                .unwrap_or_default();
            assert!(
                !v.contains("alice@example.com") && !v.contains("555 0100"),
                "{}={v}",
                kv.key
            );
        }
        assert!(!s.name.contains("alice"));
    }
}
