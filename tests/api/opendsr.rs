//! OpenDSR processors: requests POSTed, statuses polled and taken by
//! signed callback, cancels sent as DELETE; against a fake OpenDSR
//! processor (a real HTTP server) that signs with a key made for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::dispatch::lookup::{Resolved, Resolver};
use dsr_orchestrator::pb;
use dsr_orchestrator::startup::Options;

use crate::backends;
use crate::harness::*;

backends!(
    an_opendsr_processor_completes_by_signed_callback,
    an_opendsr_processor_is_polled_and_retried_without_duplicates,
    a_refused_opendsr_request_escalates,
    cancelling_reaches_the_opendsr_processor,
    opendsr_processors_take_only_what_opendsr_can_say,
    a_failing_opendsr_processor_opens_its_breaker_then_is_probed,
    a_poll_lost_with_its_replica_is_polled_again,
    polls_that_fail_while_the_processor_is_away_spend_no_budget,
    a_certificate_named_where_no_delivery_may_go_is_not_fetched,
    a_status_callback_after_a_cancel_does_not_stand_for_its_notice,
    a_delivery_ends_with_its_lease_however_many_calls_it_makes,
    callbacks_at_once_fetch_the_certificate_once,
    callbacks_beyond_their_processors_rate_are_refused_in_json,
);

/// The orchestrator's public URL in these tests.
const PUBLIC_URL: &str = "https://orchestrator.test";

/// An orchestrator offering callbacks under [`PUBLIC_URL`], with the fake
/// registered as `vendor`, polled every `poll_ms`.
async fn with_vendor(db: &TestDb, poll_ms: u64) -> (TestApp, FakeOpenDsr) {
    let fake = FakeOpenDsr::start().await;
    let app = TestApp::spawn_with(db, Default::default(), |c| {
        c.public_url = Some(PUBLIC_URL.into());
    })
    .await;
    register(&app, opendsr_processor("vendor", &fake.url(), poll_ms)).await;
    (app, fake)
}

/// An orchestrator moved by hand on a manual clock, with the fake
/// registered as `vendor` (polled every second, a retry budget of two),
/// and a deletion for `email` it has accepted: the fake, the clock, the
/// orchestrator and the request.
async fn accepted_by_vendor(
    db: &TestDb,
    email: &str,
) -> (FakeOpenDsr, ManualClock, TestApp, pb::DataSubjectRequest) {
    let fake = FakeOpenDsr::start().await;
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(db, manual_options(&clock), |_| {}).await;
    let mut vendor = opendsr_processor("vendor", &fake.url(), 1000);
    vendor.retry_policy.as_mut().unwrap().max_attempts = 2;
    register(&app, vendor).await;
    let req = submit(&app, deletion(email)).await;
    let id = &req.instructions[0].instruction_id;
    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, id, pb::InstructionState::Acknowledged).await;
    (fake, clock, app, req)
}

/// POSTs a callback to the orchestrator; returns the HTTP status, and
/// the gRPC code a refusal's JSON names ("" for an empty answer).
async fn callback(app: &TestApp, body: &[u8], signature: Option<&str>) -> (u16, String) {
    answer(callback_as(app, reqwest::Method::POST, body, signature).await).await
}

/// The same with `method`; the answer as it came.
async fn callback_as(
    app: &TestApp,
    method: reqwest::Method,
    body: &[u8],
    signature: Option<&str>,
) -> reqwest::Response {
    // This client's TLS (unused on plain HTTP) takes ring, as the server's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!("http://{}/opendsr/callbacks/vendor", app.addr),
        )
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        request = request.header("X-OpenDSR-Signature", s);
    }
    request.send().await.unwrap()
}

/// The status of `response`, and the code of its JSON error, if any.
async fn answer(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    if bytes.is_empty() {
        return (status, String::new());
    }
    let error: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON answer");
    (status, error["code"].as_str().expect("a code").to_string())
}

/// The POSTed request carries the instruction id, the mapped type,
/// the accepted identities only, the law and the callback URL; an
/// unsigned or badly signed callback is refused (in JSON, as an oversized
/// body or another method is) and counted; a signed `completed`
/// completes the instruction and closes the request.
async fn an_opendsr_processor_completes_by_signed_callback(db: TestDb) {
    let (app, fake) = with_vendor(&db, 3_600_000).await;
    let req = submit(&app, deletion("opendsr-ida@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;

    let posted = fake.posted();
    assert_eq!(posted.len(), 1);
    let sent = &posted[0];
    assert_eq!(sent["subject_request_id"], id.as_str());
    assert_eq!(sent["subject_request_type"], "erasure");
    assert_eq!(sent["regulation"], "ccpa");
    assert_eq!(sent["api_version"], "2.0");
    assert_eq!(
        sent["subject_identities"],
        serde_json::json!([{"identity_type": "email", "identity_value": "opendsr-ida@example.com", "identity_format": "raw"}])
    );
    assert_eq!(
        sent["status_callback_urls"],
        serde_json::json!([format!("{PUBLIC_URL}/opendsr/callbacks/vendor")])
    );

    let body = FakeOpenDsr::callback_body(&id, "completed");
    let refused = |status: u16, code: &str| (status, code.to_string());
    assert_eq!(
        callback(&app, &body, None).await,
        refused(401, "UNAUTHENTICATED")
    );
    let other = FakeOpenDsr::callback_body(&id, "cancelled");
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&other))).await,
        refused(403, "PERMISSION_DENIED")
    );
    assert_eq!(
        callback(&app, &body, Some("not base64!")).await,
        refused(403, "PERMISSION_DENIED")
    );
    // Refusals before the signature is read: in JSON too.
    let huge = vec![b' '; 5 << 20];
    assert_eq!(
        callback(&app, &huge, None).await,
        refused(400, "OUT_OF_RANGE")
    );
    let garbled = reqwest::Client::new()
        .post(format!("http://{}/opendsr/callbacks/%FF", app.addr))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(garbled).await, refused(404, "NOT_FOUND"));
    let got = callback_as(&app, reqwest::Method::GET, b"", None).await;
    assert_eq!(got.headers()["allow"], "POST");
    assert_eq!(answer(got).await, refused(405, "UNIMPLEMENTED"));
    assert_eq!(
        wait_for_state(&app, &id, pb::InstructionState::Acknowledged)
            .await
            .state(),
        pb::InstructionState::Acknowledged,
        "a refused callback changes nothing"
    );
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&body))).await,
        (202, String::new())
    );
    watch_to_end(&app.requests, &req.request_id).await;
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome, pb::OverallOutcome::Fulfilled as i32);
    assert_eq!(
        record.lines[0].state,
        pb::InstructionState::Completed as i32
    );
    // The same callback again is harmless.
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&body))).await,
        (202, String::new())
    );

    // A processor id nobody registered is counted, but not under its own
    // name: anyone may post to any path.
    let stranger = reqwest::Client::new()
        .post(format!("http://{}/opendsr/callbacks/nobody-here", app.addr))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer(stranger).await, refused(404, "NOT_FOUND"));

    let (_, metrics) = app.admin_get("/metrics").await;
    for (processor, result, n) in [
        ("vendor", "unsigned", 1),
        ("vendor", "bad_signature", 2),
        ("vendor", "applied", 2),
        ("unknown", "rejected", 1),
    ] {
        let line = format!(
            r#"dsr_opendsr_callbacks_total{{processor="{processor}",result="{result}"}} {n}"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    assert!(!metrics.contains("nobody-here"), "{metrics}");
    app.stop().await;
}

/// A POST refused with 503 and `Retry-After` is retried no sooner than
/// asked; the retry asks first (404: not there) and then POSTs; the
/// request is then polled until the processor reports `completed`.
async fn an_opendsr_processor_is_polled_and_retried_without_duplicates(db: TestDb) {
    let (app, fake) = with_vendor(&db, 1000).await;
    fake.script([HookReply::json(503, "").with_header("retry-after", "1")]);
    let started = std::time::Instant::now();
    let req = submit(&app, deletion("opendsr-jon@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(fake.posted().len(), 2, "the refused POST and its retry");
    let asked = fake.polls();
    assert_eq!(asked, 1, "the retry asked before it POSTed");

    // While the processor works, each poll leaves the instruction open
    // and the next one comes.
    fake.set_status(&id, "in_progress");
    fake.wait_for_calls(2 + asked + 2).await;
    let open = get_request(&app, &req.request_id).await;
    assert_eq!(open.status, pb::RequestStatus::InProgress as i32);
    fake.set_status(&id, "completed");
    watch_to_end(&app.requests, &req.request_id).await;
    let record = record(&app, &req.request_id).await;
    assert_eq!(
        record.lines[0].state,
        pb::InstructionState::Completed as i32
    );
    assert_eq!(fake.posted().len(), 2, "polls never POST again");
    app.stop().await;
}

/// A 400 means the processor will not take the request as sent: the
/// instruction escalates at once.
async fn a_refused_opendsr_request_escalates(db: TestDb) {
    let (app, fake) = with_vendor(&db, 1000).await;
    fake.script([HookReply::json(
        400,
        r#"{"error":{"code":400,"message":"unsupported identity"}}"#,
    )]);
    let req = submit(&app, deletion("opendsr-kim@example.com")).await;
    let id = &req.instructions[0].instruction_id;
    let escalated = wait_for_state(&app, id, pb::InstructionState::Escalated).await;
    assert_eq!(error_codes(&escalated), ["HTTP_400"]);
    app.stop().await;
}

/// Cancelling the request sends `DELETE /opendsr/requests/{id}`.
async fn cancelling_reaches_the_opendsr_processor(db: TestDb) {
    let (app, fake) = with_vendor(&db, 3_600_000).await;
    let req = submit(&app, deletion("opendsr-lea@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    app.requests
        .clone()
        .cancel_request(pb::CancelRequestRequest {
            request_id: req.request_id.clone(),
            reason: "the person withdrew the request".into(),
        })
        .await
        .unwrap();
    fake.wait_for_calls(2).await;
    assert_eq!(fake.deleted(), [id]);
    app.stop().await;
}

/// A status callback for an instruction cancelled since does not stand for
/// the cancel's notice: the processor is answered 202 and learns nothing
/// of the cancel from it, so the DELETE still goes out.
async fn a_status_callback_after_a_cancel_does_not_stand_for_its_notice(db: TestDb) {
    let (fake, _clock, app, req) = accepted_by_vendor(&db, "opendsr-late@example.com").await;
    let id = req.instructions[0].instruction_id.clone();
    cancel(&app, &req.request_id, "the person withdrew the request").await;
    let body = FakeOpenDsr::callback_body(&id, "in_progress");
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&body))).await,
        (202, String::new())
    );
    assert!(fake.deleted().is_empty());
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(fake.deleted(), [id]);
    app.stop().await;
}

/// A delivery ends with its lease, however many calls it makes: a retry
/// to an OpenDSR processor asks (GET) before it posts, each call within
/// the processor's timeout, and the two together would outlast a lease
/// of that timeout (no margin here), when another replica could claim the
/// instruction again. It is cut off at the lease and retried.
async fn a_delivery_ends_with_its_lease_however_many_calls_it_makes(db: TestDb) {
    let fake = FakeOpenDsr::start().await;
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |c| {
        c.lease_margin = Duration::ZERO;
    })
    .await;
    let mut vendor = opendsr_processor("vendor", &fake.url(), 1000);
    if let Some(pb::adapter::Kind::Opendsr(o)) = vendor.adapter.as_mut().unwrap().kind.as_mut() {
        o.timeout = Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        });
    }
    register(&app, vendor).await;
    fake.script([HookReply::json(503, "")]);
    let req = submit(&app, deletion("opendsr-slow@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(fake.posted().len(), 1, "refused, to be retried");

    fake.answer_after(Duration::from_millis(600));
    clock.advance(Duration::from_secs(60));
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(fake.polls(), 1, "the retry asked first");
    let listed = all_instructions(&app).await;
    let line = listed.iter().find(|i| i.instruction_id == id).unwrap();
    assert_eq!(line.state(), pb::InstructionState::Pending, "{line:?}");
    let cut = &line.history[1];
    assert_eq!(cut.error_code, "DEADLINE_EXCEEDED", "{cut:?}");
    assert!(
        cut.error_message.contains("within the delivery's lease"),
        "{cut:?}"
    );
    app.stop().await;
}

/// OpenDSR has no word for a correction or a phone number: a processor
/// on it cannot be registered for them.
async fn opendsr_processors_take_only_what_opendsr_can_say(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let mut processor = opendsr_processor("vendor", "https://opendsr.vendor.example", 1000);
    processor
        .supported_kinds
        .push(pb::RequestKind::Correct as i32);
    processor
        .accepted_identity_types
        .push(pb::IdentityType::Phone as i32);
    let refused = app
        .processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(processor),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let fields = violations(&refused);
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("processor.supported_kinds")),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("processor.accepted_identity_types")),
        "{fields:?}"
    );
    app.stop().await;
}

/// Three refused POSTs open the processor's breaker; after the cool-down
/// one probe goes, succeeds and closes it.
async fn a_failing_opendsr_processor_opens_its_breaker_then_is_probed(db: TestDb) {
    let fake = FakeOpenDsr::start().await;
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.breaker_failures = 3;
        c.breaker_cooldown = std::time::Duration::from_secs(1);
    })
    .await;
    let mut vendor = opendsr_processor("vendor", &fake.url(), 3_600_000);
    vendor.retry_policy.as_mut().unwrap().max_attempts = 50;
    register(&app, vendor).await;
    fake.script((0..3).map(|_| HookReply::json(503, "")));
    let req = submit(&app, deletion("opendsr-max@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    let acknowledged = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    let history = &acknowledged.history;
    assert_eq!(history.len(), 4, "three failures and the probe");
    // The cool-down runs from the breaker's opening, a little before the
    // third failure is written; the retry policy alone would try again
    // within 40 ms.
    let third = history[2].finished_at.as_ref().unwrap();
    let probe = history[3].started_at.as_ref().unwrap();
    assert!(
        probe.seconds * 1000 + i64::from(probe.nanos) / 1_000_000
            >= third.seconds * 1000 + i64::from(third.nanos) / 1_000_000 + 500
    );
    let (_, metrics) = app.admin_get("/metrics").await;
    for state in ["open", "closed"] {
        let line =
            format!(r#"dsr_circuit_breaker_changes_total{{processor="vendor",state="{state}"}} 1"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    app.stop().await;
}

/// Polls are reminders and spend none of the delivery budget, even when
/// one is lost with its replica: after more polls than `max_attempts`, a
/// poll whose replica died (its lease taken, its answer never written) is
/// polled again once the lease expires, not escalated. The lost poll
/// counts as one delivery, so replicas dying on the same instruction
/// again and again still escalate it when the budget is spent.
async fn a_poll_lost_with_its_replica_is_polled_again(db: TestDb) {
    let (fake, clock, app, req) = accepted_by_vendor(&db, "opendsr-lost-poll@example.com").await;
    let id = req.instructions[0].instruction_id.clone();
    // Three polls, each answered "pending": more than the budget of two.
    for polls in 1..=3 {
        clock.advance(Duration::from_secs(2));
        app.dispatcher.run_once().await.unwrap();
        assert_eq!(fake.polls(), polls);
        wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    }

    // A replica that dies mid-poll: it leases the next poll and is gone.
    lose_a_poll(&app, &clock, "vendor").await;
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(fake.polls(), 4, "the lost poll is made again");
    let polled = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    assert_eq!(polled.attempts, 6, "the POST, four polls and the lost one");
    let open = |i: &pb::Instruction| -> Vec<u32> {
        let open = ["pending", "reminder"];
        i.history
            .iter()
            .filter(|a| open.contains(&a.result.as_str()))
            .map(|a| a.attempt)
            .collect()
    };
    let listed = all_instructions(&app).await;
    assert!(open(&listed[0]).is_empty(), "{:?}", listed[0].history);
    assert_eq!(
        listed[0].history[4].result, "lease_expired",
        "the lost poll"
    );

    // The lost poll was a delivery: a second one spends the budget.
    lose_a_poll(&app, &clock, "vendor").await;
    app.dispatcher.run_once().await.unwrap();
    assert_eq!(fake.polls(), 4);
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert_eq!(
        escalated.summary.unwrap().last_error,
        "delivery budget of 2 attempts spent; the last one ended without an answer"
    );
    let listed = all_instructions(&app).await;
    assert!(open(&listed[0]).is_empty(), "{:?}", listed[0].history);
    app.stop().await;
}

/// Once the processor has accepted, a poll it fails (503: it is away) is
/// still a poll: more failures than `max_attempts` leave the instruction
/// waiting, each asked again after the poll interval and kept in its
/// history, and the request completes once the processor answers again.
async fn polls_that_fail_while_the_processor_is_away_spend_no_budget(db: TestDb) {
    let (fake, clock, app, req) = accepted_by_vendor(&db, "opendsr-away@example.com").await;
    let id = req.instructions[0].instruction_id.clone();
    fake.set_status(&id, "in_progress");
    // Four: fewer than the failures that open a breaker (10 by default).
    fake.fail_polls(4);
    polls_fail_without_escalating(&app, &clock, &id, 4).await;
    assert_eq!(fake.polls(), 4);

    fake.set_status(&id, "completed");
    clock.advance(Duration::from_secs(2));
    app.dispatcher.run_once().await.unwrap();
    watch_to_end(&app.requests, &req.request_id).await;
    let record = record(&app, &req.request_id).await;
    assert_eq!(
        record.lines[0].state,
        pb::InstructionState::Completed as i32
    );
    app.stop().await;
}

/// Names the test's certificate hosts resolve to: `metadata-too.test`
/// to a link-local address and loopback, `lan-too.test` to an address
/// beyond loopback and loopback; any other name to loopback. A connection
/// drops the addresses it may not use and would reach the fake on
/// loopback; the certificate's URL is held to the rules of registration,
/// which refuse such a name outright.
struct CertificateHosts;

impl Resolver for CertificateHosts {
    fn resolve(&self, host: &str, port: u16) -> Resolved {
        let also = match host {
            "metadata-too.test" => Some("169.254.169.254"),
            "lan-too.test" => Some("192.0.2.1"),
            _ => None,
        };
        let addresses = also
            .into_iter()
            .chain(["127.0.0.1"])
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect();
        Box::pin(async move { Ok(addresses) })
    }
}

/// The certificate a processor's discovery document names is fetched only
/// where a processor could be registered: not from a link-local address
/// (where cloud metadata services answer), an address written as one
/// number, a name that also resolves to one, a metadata service's name, a
/// URL with user information, or over plaintext (`HTTP://` too) to a name
/// that also resolves beyond loopback. The callback is answered 503
/// without a connection to the URL, and without saying to the unproven
/// caller what the server found. A failed fetch is not tried again for
/// 30 s, whatever callbacks come; after that, named back at the
/// processor, the certificate is fetched and the callback applies.
async fn a_certificate_named_where_no_delivery_may_go_is_not_fetched(db: TestDb) {
    let fake = FakeOpenDsr::start().await;
    let clock = ManualClock::new();
    let options = Options {
        resolver: Some(Arc::new(CertificateHosts)),
        ..manual_options(&clock)
    };
    let app = TestApp::spawn_with(&db, options, |_| {}).await;
    register(&app, opendsr_processor("vendor", &fake.url(), 3_600_000)).await;
    let req = submit(&app, deletion("opendsr-cert@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    app.dispatcher.run_once().await.unwrap();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    let refused = "the processor's certificate could not be fetched (the server's log \
                   says why): retry later";
    let body = FakeOpenDsr::callback_body(&id, "completed");
    let port = fake.addr.port();
    for url in [
        "http://169.254.169.254/cert.pem".to_string(),
        "http://2852039166/cert.pem".to_string(),
        format!("http://metadata-too.test:{port}/cert.pem"),
        "https://metadata.google.internal/cert.pem".to_string(),
        format!("http://lan-too.test:{port}/cert.pem"),
        format!("HTTP://lan-too.test:{port}/cert.pem"),
        format!("http://user:secret@127.0.0.1:{port}/cert.pem"),
    ] {
        fake.name_certificate_at(Some(&url));
        clock.advance(Duration::from_secs(31));
        let asked = fake.discoveries();
        let response =
            callback_as(&app, reqwest::Method::POST, &body, Some(&fake.sign(&body))).await;
        assert_eq!(response.status().as_u16(), 503, "{url}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["message"], refused, "{url}");
        assert_eq!(fake.discoveries(), asked + 1, "{url}: looked up");
        assert_eq!(fake.certificate_fetches(), 0, "{url} was fetched");
    }
    let listed = all_instructions(&app).await;
    assert_eq!(listed[0].state(), pb::InstructionState::Acknowledged);

    // Within 30 s of the failure nothing is fetched, not even the
    // discovery document, however good the certificate has become.
    fake.name_certificate_at(None);
    let asked = fake.discoveries();
    let response = callback_as(&app, reqwest::Method::POST, &body, Some(&fake.sign(&body))).await;
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(fake.discoveries(), asked, "nothing fetched");
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&body))).await,
        (202, String::new())
    );
    assert_eq!(fake.certificate_fetches(), 1);
    watch_to_end(&app.requests, &req.request_id).await;
    app.stop().await;
}

/// Callbacks that come together while no key is held wait for one fetch
/// of the processor's certificate, not one each: forged ones as well,
/// which its key then refuses.
async fn callbacks_at_once_fetch_the_certificate_once(db: TestDb) {
    let (app, fake) = with_vendor(&db, 3_600_000).await;
    let req = submit(&app, deletion("opendsr-once@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    // Slow enough that every callback comes while the first fetch runs.
    fake.answer_discovery_after(Duration::from_millis(300));
    let body = FakeOpenDsr::callback_body(&id, "completed");
    let forged = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 256])
    };
    let answers =
        futures::future::join_all((0..8).map(|_| callback(&app, &body, Some(&forged)))).await;
    for answer in &answers {
        assert_eq!(answer.0, 403, "{answers:?}");
    }
    assert_eq!(fake.discoveries(), 1, "one fetch for all of them");
    assert_eq!(fake.certificate_fetches(), 1);
    // The processor's own signature verifies with the key that fetch got.
    assert_eq!(
        callback(&app, &body, Some(&fake.sign(&body))).await,
        (202, String::new())
    );
    assert_eq!(fake.discoveries(), 1);
    watch_to_end(&app.requests, &req.request_id).await;
    app.stop().await;
}

/// OpenDSR callbacks are held to a rate per processor their path names,
/// and refused beyond it in the callbacks' JSON (429), not in gRPC's
/// form; another processor's callbacks are not held up.
async fn callbacks_beyond_their_processors_rate_are_refused_in_json(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.rate_limit = 1.0;
        c.rate_burst = 5.0;
    })
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let post = |processor: &str| {
        client
            .post(format!("http://{}/opendsr/callbacks/{processor}", app.addr))
            .header("content-type", "application/json")
            .body(FakeOpenDsr::callback_body("x", "completed"))
            .send()
    };
    for _ in 0..5 {
        let answer = post("vendor").await.unwrap();
        assert_eq!(answer.status().as_u16(), 404, "no such processor");
    }
    let refused = post("vendor").await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(answer(refused).await.1, "RESOURCE_EXHAUSTED");
    let other = post("other").await.unwrap();
    assert_eq!(other.status().as_u16(), 404, "another processor's own rate");
    app.stop().await;
}
