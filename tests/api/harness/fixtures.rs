//! Builders for the messages tests send, and waits on what comes back.

use std::time::Duration;

use dsr_orchestrator::pb;
use prost_types::Duration as PbDuration;
use tokio_stream::StreamExt;

use super::{FakeProcessor, Reply, TestApp};
use dsr_orchestrator::clock::{Clock, ManualClock};
use dsr_orchestrator::domain::ProcessorId;
use dsr_orchestrator::startup::Options;
use dsr_orchestrator::store::ClaimOrder;

/// A fresh request id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A protobuf duration of `ms` milliseconds.
pub fn ms(ms: u64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A push processor handling deletion and access, accepting emails and
/// account ids, with fast retries.
pub fn push_processor(id: &str, endpoint: &str) -> pb::Processor {
    pb::Processor {
        processor_id: id.into(),
        display_name: format!("{id} Ltd."),
        role: pb::ProcessorRole::Vendor as i32,
        country: "JP".into(),
        supported_kinds: vec![
            pb::RequestKind::Delete as i32,
            pb::RequestKind::Access as i32,
        ],
        accepted_identity_types: vec![
            pb::IdentityType::Email as i32,
            pb::IdentityType::AccountId as i32,
        ],
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
                endpoint: endpoint.into(),
                timeout: ms(2000),
                tls: None,
            })),
        }),
        retry_policy: Some(pb::RetryPolicy {
            initial_backoff: ms(10),
            max_backoff: ms(40),
            multiplier: 2.0,
            max_attempts: 4,
        }),
        ..Default::default()
    }
}

/// A push processor whose deliveries time out only after a minute: one
/// hanging on a delivery holds its slot for as long as a test looks.
pub fn patient_push_processor(id: &str, endpoint: &str) -> pb::Processor {
    let mut p = push_processor(id, endpoint);
    if let Some(pb::adapter::Kind::Grpc(grpc)) = p.adapter.as_mut().and_then(|a| a.kind.as_mut()) {
        grpc.timeout = ms(60_000);
    }
    p
}

/// A push processor at `endpoint` that retries fast and long.
pub fn fragile(id: &str, endpoint: &str) -> pb::Processor {
    let mut p = push_processor(id, endpoint);
    p.retry_policy.as_mut().unwrap().max_attempts = 50;
    p
}

/// The circuit breaker `GetProcessor` shows for processor `id`.
pub async fn breaker(app: &TestApp, id: &str) -> Option<pb::CircuitBreaker> {
    app.processors
        .clone()
        .get_processor(pb::GetProcessorRequest {
            processor_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .circuit_breaker
}

/// Waits (30 s at most) until processor `id`'s breaker, as `GetProcessor`
/// shows it, is in one of `states`.
pub async fn until_breaker(
    app: &TestApp,
    id: &str,
    states: &[pb::circuit_breaker::State],
    what: &str,
) {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !breaker(app, id)
            .await
            .is_some_and(|b| states.contains(&b.state()))
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect(what);
}

/// A push processor reached by webhook at `url`.
pub fn webhook_processor(id: &str, url: &str) -> pb::Processor {
    pb::Processor {
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Webhook(pb::WebhookAdapter {
                url: url.into(),
                timeout: ms(2000),
                tls: None,
            })),
        }),
        ..push_processor(id, "http://127.0.0.1:1")
    }
}

/// Another orchestrator at `endpoint`, polled every `poll_ms`.
pub fn dsr_processor(id: &str, endpoint: &str, poll_ms: u64) -> pb::Processor {
    pb::Processor {
        role: pb::ProcessorRole::GroupCompany as i32,
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Dsr(pb::DsrAdapter {
                endpoint: endpoint.into(),
                timeout: ms(5000),
                tls: None,
                token_file: String::new(),
                poll_interval: ms(poll_ms),
            })),
        }),
        ..push_processor(id, "http://127.0.0.1:1")
    }
}

/// The same, presenting the token in `token_file` downstream.
pub fn dsr_processor_with_token(
    id: &str,
    endpoint: &str,
    poll_ms: u64,
    token_file: &std::path::Path,
) -> pb::Processor {
    let mut p = dsr_processor(id, endpoint, poll_ms);
    if let Some(pb::adapter::Kind::Dsr(d)) = p.adapter.as_mut().and_then(|a| a.kind.as_mut()) {
        d.token_file = token_file.display().to_string();
    }
    p
}

/// An OpenDSR processor at `url`, polled every `poll_ms`.
pub fn opendsr_processor(id: &str, url: &str, poll_ms: u64) -> pb::Processor {
    pb::Processor {
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Opendsr(pb::OpenDsrAdapter {
                url: url.into(),
                timeout: ms(2000),
                tls: None,
                poll_interval: ms(poll_ms),
            })),
        }),
        ..push_processor(id, "http://127.0.0.1:1")
    }
}

/// A pull processor.
pub fn pull_processor(id: &str, ack_timeout_ms: u64) -> pb::Processor {
    pb::Processor {
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Pull(pb::PullAdapter {})),
        }),
        ack_timeout: ms(ack_timeout_ms),
        ..push_processor(id, "http://127.0.0.1:1")
    }
}

/// A deletion request for `email` (CCPA, verified to a reasonably high
/// degree as deletion needs, via web form).
pub fn deletion(email: &str) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        request_id: new_id(),
        kind: pb::RequestKind::Delete as i32,
        jurisdiction: pb::Jurisdiction::Ccpa as i32,
        subject_identities: vec![
            pb::SubjectIdentity {
                r#type: pb::IdentityType::Email as i32,
                value: email.into(),
            },
            pb::SubjectIdentity {
                r#type: pb::IdentityType::Phone as i32,
                value: "+1 555 0100".into(),
            },
        ],
        submitted_at: None,
        channel: "web_form".into(),
        requester: pb::Requester::Self_ as i32,
        verification: Some(pb::Verification {
            level: pb::VerificationLevel::ReasonablyHigh as i32,
            method: "email link + last order number".into(),
        }),
        processor_ids: vec![],
        labels: Default::default(),
        access_scope: 0,
        requester_evidence: String::new(),
        lookback_start: None,
    }
}

/// A plain result with `outcome` and no details.
pub fn result(outcome: pb::Outcome) -> Option<pb::InstructionResult> {
    Some(pb::InstructionResult {
        outcome: outcome as i32,
        ..Default::default()
    })
}

/// Registers `processor`; returns its callback token.
pub async fn register(app: &TestApp, processor: pb::Processor) -> String {
    app.processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(processor),
        })
        .await
        .expect("register processor")
        .into_inner()
        .callback_token
}

/// Pulls up to `max` instructions as the pull processor holding `token`.
pub async fn pull(app: &TestApp, token: &str, max: i32) -> Vec<pb::Instruction> {
    app.instructions
        .clone()
        .pull_instructions(authed(
            token,
            pb::PullInstructionsRequest {
                max_instructions: max,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .instructions
}

/// Disables processor `id`; returns it as stored.
pub async fn disable(app: &TestApp, id: &str) -> pb::Processor {
    app.processors
        .clone()
        .disable_processor(pb::DisableProcessorRequest {
            processor_id: id.into(),
        })
        .await
        .expect("disable processor")
        .into_inner()
}

/// Submits; returns the request.
pub async fn submit(app: &TestApp, req: pb::SubmitRequestRequest) -> pb::DataSubjectRequest {
    app.requests
        .clone()
        .submit_request(req)
        .await
        .expect("submit")
        .into_inner()
}

/// The processors a request fanned out to, sorted.
pub fn processors_of(r: &pb::DataSubjectRequest) -> Vec<&str> {
    let mut ids: Vec<_> = r
        .instructions
        .iter()
        .map(|i| i.processor_id.as_str())
        .collect();
    ids.sort_unstable();
    ids
}

/// Submits a request that must be refused; returns the refusal.
pub async fn submit_rejected(app: &TestApp, req: pb::SubmitRequestRequest) -> tonic::Status {
    app.requests
        .clone()
        .submit_request(req)
        .await
        .expect_err("submit must be refused")
}

/// Follows `WatchRequest` until the stream ends; returns every event.
pub async fn watch_to_end(
    client: &pb::request_service_client::RequestServiceClient<super::app::Authed>,
    request_id: &str,
) -> Vec<pb::RequestEvent> {
    let mut stream = client
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: request_id.into(),
            after_sequence: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let collect = async {
        while let Some(e) = stream.next().await {
            events.push(e.expect("event"));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .expect("request did not finish in time");
    events
}

/// The request as `GetRequest` shows it.
pub async fn get_request(app: &TestApp, id: &str) -> pb::DataSubjectRequest {
    app.requests
        .clone()
        .get_request(pb::GetRequestRequest {
            request_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// What `VerifyAuditTrail` says of the request's audit trail.
pub async fn verify_trail(app: &TestApp, id: &str) -> pb::AuditTrailVerification {
    app.requests
        .clone()
        .verify_audit_trail(pb::VerifyAuditTrailRequest {
            request_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The completion record.
pub async fn record(app: &TestApp, request_id: &str) -> pb::CompletionRecord {
    app.requests
        .clone()
        .get_completion_record(pb::GetCompletionRecordRequest {
            request_id: request_id.into(),
        })
        .await
        .expect("record")
        .into_inner()
}

/// Adds `authorization: Bearer <token>` to a message.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Field paths of the `BadRequest` violations in an `INVALID_ARGUMENT` status.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The first page of requests (every one, in the tests' small sets).
pub async fn all_requests(app: &TestApp) -> Vec<pb::DataSubjectRequest> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .requests
            .clone()
            .list_requests(pb::ListRequestsRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.requests);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Every instruction, page by page.
pub async fn all_instructions(app: &TestApp) -> Vec<pb::Instruction> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .instructions
            .clone()
            .list_instructions(pb::ListInstructionsRequest {
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.instructions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Push processors with these ids, each a fake answering `reply`.
pub async fn push_processors(app: &TestApp, ids: &[&str], reply: Reply) -> Vec<FakeProcessor> {
    let mut fakes = Vec::new();
    for id in ids {
        let fake = FakeProcessor::start(reply.clone()).await;
        register(app, push_processor(id, &fake.endpoint())).await;
        fakes.push(fake);
    }
    fakes
}

/// Follows the instruction's request until the instruction reaches `state`;
/// returns it as listed then.
pub async fn wait_for_state(
    app: &TestApp,
    instruction_id: &str,
    state: pb::InstructionState,
) -> pb::Instruction {
    let find = || async {
        all_instructions(app)
            .await
            .into_iter()
            .find(|i| i.instruction_id == instruction_id)
            .expect("instruction exists")
    };
    let first = find().await;
    if first.state() == state {
        return first;
    }
    let mut stream = app
        .requests
        .clone()
        .watch_request(pb::WatchRequestRequest {
            request_id: first.request_id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let wait = async {
        while let Some(e) = stream.next().await {
            let e = e.unwrap();
            if let Some(i) = &e.instruction
                && i.instruction_id == instruction_id
                && i.state() == state
            {
                return;
            }
        }
        panic!("request ended before the instruction reached {state:?}");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("state not reached in time");
    find().await
}

/// The error code of each delivery attempt of `instruction`, in order.
pub fn error_codes(instruction: &pb::Instruction) -> Vec<&str> {
    instruction
        .history
        .iter()
        .map(|a| a.error_code.as_str())
        .collect()
}

/// Cancels `request_id` for `reason`.
pub async fn cancel(app: &TestApp, request_id: &str, reason: &str) {
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: request_id.into(),
            reason: reason.into(),
        })
        .await
        .expect("cancel");
}

/// An access request for `email`, asking for `scope`.
pub fn access(email: &str, scope: pb::AccessScope) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        kind: pb::RequestKind::Access as i32,
        access_scope: scope as i32,
        ..deletion(email)
    }
}

/// The id of `req`'s instruction to `processor`.
pub fn instruction_of(req: &pb::DataSubjectRequest, processor: &str) -> String {
    let line = req
        .instructions
        .iter()
        .find(|l| l.processor_id == processor);
    line.expect("an instruction to the processor")
        .instruction_id
        .clone()
}

/// Server options for a test that moves time and passes by hand: `clock`,
/// and no dispatcher of its own (the test calls `dispatcher.run_once`).
pub fn manual_options(clock: &ManualClock) -> Options {
    Options {
        clock: std::sync::Arc::new(clock.clone()),
        run_dispatcher: false,
        ..Options::default()
    }
}

/// A replica that dies mid-poll: two seconds on, `processor`'s next poll is
/// leased (for five seconds) by a replica that is then gone, and the clock
/// moves past its lease.
pub async fn lose_a_poll(app: &TestApp, clock: &ManualClock, processor: &str) {
    clock.advance(Duration::from_secs(2));
    let lost = app
        .store
        .claim(
            &dsr_orchestrator::domain::ProcessorId::parse(processor).unwrap(),
            u32::MAX,
            2,
            10,
            "dead-replica",
            Duration::from_secs(5),
            clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].kind, dsr_orchestrator::store::ClaimKind::Reminder);
    clock.advance(Duration::from_secs(6));
}

/// Runs `polls` dispatcher passes two seconds apart on `clock`, each a
/// poll of instruction `id` (polled every second) that fails, and checks
/// after each that the instruction is not escalated and its history holds
/// one more retryable error; then that no poll goes sooner than the poll
/// interval after the last.
pub async fn polls_fail_without_escalating(
    app: &TestApp,
    clock: &ManualClock,
    id: &str,
    polls: usize,
) {
    for failures in 1..=polls {
        clock.advance(Duration::from_secs(2));
        assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "a poll");
        let waiting = all_instructions(app).await;
        let waiting = waiting.iter().find(|i| i.instruction_id == id).unwrap();
        assert_ne!(
            waiting.state(),
            pb::InstructionState::Escalated,
            "after {failures} failed polls: {:?}",
            waiting.summary
        );
        let failed = waiting
            .history
            .iter()
            .filter(|a| a.result == "retryable_error")
            .count();
        assert_eq!(failed, failures);
    }
    clock.advance(Duration::from_millis(500));
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 0);
}

/// What a replica's pass asks of `processor` when a test leases by hand:
/// up to ten due instructions for a minute, `max_attempts` deliveries
/// allowed, not aligned with other processors.
pub fn claim_order(processor: &ProcessorId, max_attempts: u32) -> ClaimOrder<'_> {
    ClaimOrder {
        processor,
        max_reminders: 3,
        max_attempts,
        polls: false,
        limit: 10,
        max_in_flight: 512,
        per_second: 0,
        lease: Duration::from_secs(60),
        aligned: false,
    }
}
