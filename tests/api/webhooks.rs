//! Webhook processors: signed deliveries to a real HTTP server, answers at
//! once or later over the HTTP callback API, `Retry-After`, fatal answers,
//! secrets that are shown once and rotate.

use std::time::Duration;

use dsr_orchestrator::clock::ManualClock;
use dsr_orchestrator::pb;
use serde_json::{Value, json};

use crate::backends;
use crate::harness::*;

backends!(
    webhook_deliveries_are_signed_and_complete,
    accepted_then_completed_over_the_http_callback_api,
    retry_after_is_honoured_and_gone_is_fatal,
    an_overdue_outcome_is_reminded_with_its_own_message_ids,
    the_secret_is_shown_once_and_rotates,
    http_callback_api_refuses_like_grpc,
    a_flood_on_the_callback_api_is_refused_in_json,
);

/// Registers `processor`; returns its callback token and webhook secret.
async fn register_hook(app: &TestApp, processor: pb::Processor) -> (String, String) {
    let r = app
        .processors
        .clone()
        .register_processor(pb::RegisterProcessorRequest {
            processor: Some(processor),
        })
        .await
        .expect("register webhook processor")
        .into_inner();
    (r.callback_token, r.webhook_secret)
}

/// A POST to the callback API at `path` with `token` (if any) and `body`;
/// the status and the JSON answer.
async fn post(app: &TestApp, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let header = token.map(|t| format!("Bearer {t}"));
    post_as(app, path, header.as_deref(), "application/json", body).await
}

/// The same with the `authorization` header (if any) and the content type
/// as given.
async fn post_as(
    app: &TestApp,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let client = dsr_orchestrator::tls::http_client().unwrap();
    let mut request = client
        .post(format!("http://{}{path}", app.addr))
        .header("content-type", content_type)
        .body(body.to_string());
    if let Some(header) = authorization {
        request = request.header("authorization", header);
    }
    let response = request.send().await.expect("callback API answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn fields(error: &Value) -> Vec<String> {
    error["field_violations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A delivery is one signed POST whose 200 answer completes the
/// instruction: the processor sees only the identities it accepts.
async fn webhook_deliveries_are_signed_and_complete(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    let (_, secret) = register_hook(&app, webhook_processor("hooked", &hook.url())).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let req = submit(&app, deletion("hook-alice@example.com")).await;
    let instruction_id = req.instructions[0].instruction_id.clone();
    let events = watch_to_end(&app.requests, &req.request_id).await;
    assert_eq!(
        events.last().unwrap().r#type(),
        pb::RequestEventType::Completed
    );

    let got = hook.received();
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert!(d.signed_with(&secret), "signature {}", d.signature);
    assert!(!d.signed_with("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    assert_eq!(d.webhook_id, format!("{instruction_id}_1"));
    let now = chrono::Utc::now().timestamp();
    assert!((now - d.timestamp).abs() < 300, "{}", d.timestamp);
    assert_eq!(d.event_type(), "dsr.instruction.deliver");
    assert_eq!(d.instruction_id(), instruction_id);
    let data = &d.event["data"];
    assert_eq!(data["request_id"], json!(req.request_id));
    assert_eq!(data["kind"], json!("REQUEST_KIND_DELETE"));
    assert_eq!(data["jurisdiction"], json!("JURISDICTION_CCPA"));
    assert_eq!(data["attempt"], json!(1));
    assert_eq!(data["reminder"], json!(false));
    // Data minimisation: the email, never the phone.
    assert_eq!(
        data["subject_identities"],
        json!([{"type": "IDENTITY_TYPE_EMAIL", "value": "hook-alice@example.com"}])
    );

    let record = record(&app, &req.request_id).await;
    assert_eq!(record.outcome(), pb::OverallOutcome::Fulfilled);
    assert_eq!(record.lines[0].state(), pb::InstructionState::Completed);
    assert_eq!(record.lines[0].resolved_by, "processor");
    app.stop().await;
}

/// 202 acknowledges; the processor then completes over HTTP with its
/// callback token, repeating a completion is harmless, and the answers are
/// the instruction as JSON.
async fn accepted_then_completed_over_the_http_callback_api(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::accepted()).await;
    let (token, _) = register_hook(&app, webhook_processor("async-hook", &hook.url())).await;
    let req = submit(&app, deletion("hook-bob@example.com")).await;
    hook.wait_for(1).await;
    let id = hook.received()[0].instruction_id().to_string();
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;

    let (status, ack) = post(
        &app,
        &format!("/v1/instructions/{id}/acknowledge"),
        Some(&token),
        "",
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["instruction_id"], json!(id));
    assert_eq!(ack["state"], json!("INSTRUCTION_STATE_ACKNOWLEDGED"));
    assert_eq!(ack["processor_id"], json!("async-hook"));

    let body = r#"{"result": {"outcome": "OUTCOME_COMPLETED",
        "sub_processors": [{"name": "Backup Co", "country": "US"}]}}"#;
    let path = format!("/v1/instructions/{id}/complete");
    let (status, done) = post(&app, &path, Some(&token), body).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["state"], json!("INSTRUCTION_STATE_COMPLETED"));
    assert_eq!(done["result"]["outcome"], json!("OUTCOME_COMPLETED"));
    assert_eq!(
        done["result"]["sub_processors"],
        json!([{"name": "Backup Co", "country": "US"}])
    );
    // The same outcome again is a no-op; a different one is refused.
    let (status, again) = post(&app, &path, Some(&token), body).await;
    assert_eq!(status, 200, "{again}");
    let (status, other) = post(
        &app,
        &path,
        Some(&token),
        r#"{"result": {"outcome": "OUTCOME_NO_DATA"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{other}");
    assert_eq!(other["code"], json!("FAILED_PRECONDITION"));

    let events = watch_to_end(&app.requests, &req.request_id).await;
    assert_eq!(
        events.last().unwrap().r#type(),
        pb::RequestEventType::Completed
    );
    let record = record(&app, &req.request_id).await;
    assert_eq!(record.lines[0].sub_processors.len(), 1);
    app.stop().await;
}

/// A webhook that accepted and owes its outcome is reminded when the
/// outcome is overdue: each reminder a message of its own, the attempt's
/// number then `_r1`, `_r2` (so a receiver that drops repeated message
/// ids does not drop it), marked as a reminder; the first delivery was
/// `<id>_1`.
async fn an_overdue_outcome_is_reminded_with_its_own_message_ids(db: TestDb) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_with(&db, manual_options(&clock), |_| {}).await;
    let hook = FakeHook::start(HookReply::accepted()).await;
    let mut processor = webhook_processor("slow-hook", &hook.url());
    processor.completion_timeout = ms(3_600_000);
    processor.max_reminders = Some(2);
    register_hook(&app, processor).await;
    let req = submit(&app, deletion("hook-dora@example.com")).await;
    let id = req.instructions[0].instruction_id.clone();
    assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "delivered");
    wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
    for n in 1..=2 {
        clock.advance(Duration::from_secs(3601));
        assert_eq!(app.dispatcher.run_once().await.unwrap(), 1, "reminder {n}");
        let reminded = wait_for_state(&app, &id, pb::InstructionState::Acknowledged).await;
        assert_eq!(reminded.reminders, n);
    }
    let got = hook.received();
    let ids: Vec<&str> = got.iter().map(|d| d.webhook_id.as_str()).collect();
    let expected = [
        format!("{id}_1"),
        format!("{id}_2_r1"),
        format!("{id}_3_r2"),
    ];
    assert_eq!(ids, expected);
    let reminders: Vec<&Value> = got.iter().map(|d| &d.event["data"]["reminder"]).collect();
    assert_eq!(reminders, [&json!(false), &json!(true), &json!(true)]);
    assert!(got.iter().all(|d| d.instruction_id() == id));
    app.stop().await;
}

/// 429 with `Retry-After: 1` is retried no sooner than a second later
/// (the retry policy alone would wait 10 ms); 410 Gone escalates at once.
async fn retry_after_is_honoured_and_gone_is_fatal(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    hook.script(
        [HookReply::json(429, r#"{"error": "slow down"}"#).with_header("retry-after", "1")],
    );
    register_hook(&app, webhook_processor("busy-hook", &hook.url())).await;
    let mut first = deletion("hook-carol@example.com");
    first.processor_ids = vec!["busy-hook".into()];
    let req = submit(&app, first).await;
    watch_to_end(&app.requests, &req.request_id).await;
    let got = hook.received();
    assert_eq!(got.len(), 2);
    assert!(got[1].at - got[0].at >= Duration::from_secs(1));
    let id = got[0].instruction_id().to_string();
    assert_eq!(got[0].webhook_id, format!("{id}_1"));
    assert_eq!(got[1].webhook_id, format!("{id}_2"));
    let listed = all_instructions(&app).await;
    let history: Vec<_> = listed[0]
        .history
        .iter()
        .map(|a| (a.result.as_str(), a.error_code.as_str()))
        .collect();
    assert_eq!(history, [("retryable_error", "HTTP_429"), ("outcome", "")]);

    let gone = FakeHook::start(HookReply::json(410, r#"{"error": "no such tenant"}"#)).await;
    register_hook(&app, webhook_processor("gone-hook", &gone.url())).await;
    let mut second = deletion("hook-dave@example.com");
    second.processor_ids = vec!["gone-hook".into()];
    let req = submit(&app, second).await;
    let id = req.instructions[0].instruction_id.clone();
    let escalated = wait_for_state(&app, &id, pb::InstructionState::Escalated).await;
    assert_eq!(escalated.attempts, 1);
    assert_eq!(gone.received().len(), 1);
    let r = get_request(&app, &req.request_id).await;
    assert!(r.needs_attention);
    assert!(
        r.instructions[0].last_error.contains("HTTP_410"),
        "{}",
        r.instructions[0].last_error
    );
    app.stop().await;
}

/// The secret is shown at registration and by rotation only, stored
/// sealed, and deliveries after a rotation are signed with the new one.
async fn the_secret_is_shown_once_and_rotates(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::done("OUTCOME_COMPLETED")).await;
    let (_, old) = register_hook(&app, webhook_processor("rotating-hook", &hook.url())).await;
    let shown = app
        .processors
        .clone()
        .get_processor(pb::GetProcessorRequest {
            processor_id: "rotating-hook".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let key_part = old.trim_start_matches("whsec_");
    assert!(!format!("{shown:?}").contains(key_part));
    match shown.adapter.and_then(|a| a.kind) {
        Some(pb::adapter::Kind::Webhook(w)) => assert_eq!(w.url, hook.url()),
        other => panic!("{other:?}"),
    }
    let stored = db.texts("select webhook_secret from processors").await;
    let stored = stored[0][0].clone().unwrap();
    assert!(stored.starts_with("v1:"), "sealed: {stored}");
    assert!(!stored.contains(key_part));

    let new = app
        .processors
        .clone()
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
            processor_id: "rotating-hook".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .webhook_secret;
    assert_ne!(new, old);
    let req = submit(&app, deletion("hook-erin@example.com")).await;
    watch_to_end(&app.requests, &req.request_id).await;
    let got = hook.received();
    assert!(got[0].signed_with(&new));
    assert!(!got[0].signed_with(&old));

    // Only webhook processors have secrets.
    let fake = FakeProcessor::start(Reply::done(pb::Outcome::Completed)).await;
    register(&app, push_processor("grpc-one", &fake.endpoint())).await;
    let refused = app
        .processors
        .clone()
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
            processor_id: "grpc-one".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    app.stop().await;
}

/// The callback API checks what the gRPC methods check, with the same
/// codes and field paths, as JSON: no token, a stranger's instruction, a
/// bad body, an unknown enum value, pulling without the pull adapter; and
/// a pull processor pulls over HTTP.
async fn http_callback_api_refuses_like_grpc(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let hook = FakeHook::start(HookReply::accepted()).await;
    let (token, _) = register_hook(&app, webhook_processor("strict-hook", &hook.url())).await;
    let puller = register(&app, pull_processor("http-puller", 60_000)).await;
    let mut only_hook = deletion("hook-frank@example.com");
    only_hook.processor_ids = vec!["strict-hook".into()];
    submit(&app, only_hook).await;
    hook.wait_for(1).await;
    let id = hook.received()[0].instruction_id().to_string();
    let complete = format!("/v1/instructions/{id}/complete");

    let (status, error) = post(&app, &complete, None, "{}").await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["code"], json!("UNAUTHENTICATED"));
    // A credential refused says why, as over gRPC.
    let (status, error) = post(&app, &complete, Some("dsrcb_not-a-token"), "{}").await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["message"], json!("unknown callback token"));
    let (status, error) =
        post_as(&app, &complete, Some("Basic abc"), "application/json", "{}").await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(
        error["message"],
        json!("the authorization header must be `Bearer <token>`")
    );
    let (status, error) = post(&app, &complete, Some(&puller), "{}").await;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["code"], json!("PERMISSION_DENIED"));
    // Records for another processor's instruction likewise.
    let records = r#"{"chunk_index": 0, "records": [{"category": "identifiers", "value": "x"}]}"#;
    let (status, error) = post(
        &app,
        &format!("/v1/instructions/{id}/records"),
        Some(&puller),
        records,
    )
    .await;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["code"], json!("PERMISSION_DENIED"));

    // A body is a JSON object, sent as JSON, no longer than a message.
    let pull = "/v1/instructions/pull";
    let (status, error) = post(&app, pull, Some(&puller), "[5]").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["message"], json!("the body must be a JSON object"));
    // The objects inside it too.
    for (path, body) in [
        (&complete, r#"{"result": ["OUTCOME_COMPLETED"]}"#),
        (
            &complete,
            r#"{"result": {"outcome": "OUTCOME_COMPLETED", "sub_processors": [["Backup Co", "US"]]}}"#,
        ),
    ] {
        let (status, error) = post(&app, path, Some(&token), body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["code"], json!("INVALID_ARGUMENT"), "{body}");
    }
    let bearer = format!("Bearer {puller}");
    let (status, error) = post_as(&app, pull, Some(&bearer), "text/plain", "{}").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], json!("INVALID_ARGUMENT"));
    let (status, _) = post_as(
        &app,
        pull,
        Some(&bearer),
        "Application/JSON; charset=utf-8",
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    let huge = format!(
        r#"{{"max_instructions": 1, "pad": "{}"}}"#,
        "x".repeat(5 << 20)
    );
    let (status, error) = post(&app, pull, Some(&puller), &huge).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], json!("OUT_OF_RANGE"));
    // Methods it does not take.
    let client = dsr_orchestrator::tls::http_client().unwrap();
    let got = client
        .get(format!("http://{}{pull}", app.addr))
        .bearer_auth(&puller)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status().as_u16(), 405);
    assert_eq!(got.headers()["allow"], "POST");
    let error: Value = got.json().await.unwrap();
    assert_eq!(error["code"], json!("UNIMPLEMENTED"));
    // Paths the API does not have.
    for path in [
        "/v1/nope".to_string(),
        format!("/v1/instructions/{id}/acknowledge/"),
        "/v1/instructions".to_string(),
    ] {
        let (status, error) = post(&app, &path, Some(&token), "{}").await;
        assert_eq!(status, 404, "{path}: {error}");
        assert_eq!(error["code"], json!("NOT_FOUND"), "{path}");
    }
    // An id that is not UTF-8 once decoded: refused as a malformed id,
    // in JSON, after the caller.
    let garbled = "/v1/instructions/%FF/acknowledge";
    let (status, error) = post(&app, garbled, None, "{}").await;
    assert_eq!(status, 401, "{error}");
    let (status, error) = post(&app, garbled, Some(&token), "{}").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(fields(&error), ["instruction_id"]);

    let (status, error) = post(&app, &complete, Some(&token), "{}").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], json!("INVALID_ARGUMENT"));
    assert_eq!(fields(&error), ["result"]);
    let (status, error) = post(
        &app,
        &complete,
        Some(&token),
        r#"{"result": {"outcome": "DELETED"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(fields(&error), ["result.outcome"]);
    let (status, error) = post(
        &app,
        &complete,
        Some(&token),
        r#"{"result": {"outcome": "OUTCOME_DENIED"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        fields(&error).iter().all(|f| f.starts_with("result.")) && !fields(&error).is_empty(),
        "{error}"
    );
    // A body that is not JSON names where, and quotes none of it.
    let (status, error) = post(
        &app,
        &complete,
        Some(&token),
        r#"{"result": hook-secret@example.com}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("line 1"), "{message}");
    assert!(!message.contains("hook-secret"), "{message}");
    let (status, error) = post(
        &app,
        "/v1/instructions/not-a-uuid/acknowledge",
        Some(&token),
        "",
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(fields(&error), ["instruction_id"]);

    // Pulling is for pull processors.
    let (status, error) = post(&app, "/v1/instructions/pull", Some(&token), "{}").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], json!("FAILED_PRECONDITION"));
    let mut for_puller = deletion("hook-grace@example.com");
    for_puller.processor_ids = vec!["http-puller".into()];
    submit(&app, for_puller).await;
    let (status, pulled) = post(
        &app,
        "/v1/instructions/pull",
        Some(&puller),
        r#"{"max_instructions": 5}"#,
    )
    .await;
    assert_eq!(status, 200, "{pulled}");
    let instructions = pulled["instructions"].as_array().unwrap();
    assert_eq!(instructions.len(), 1);
    assert_eq!(
        instructions[0]["state"],
        json!("INSTRUCTION_STATE_DELIVERING")
    );
    assert_eq!(
        instructions[0]["subject_identities"],
        json!([{"type": "IDENTITY_TYPE_EMAIL", "value": "hook-grace@example.com"}])
    );
    let (status, error) = post(
        &app,
        "/v1/instructions/pull",
        Some(&puller),
        r#"{"max_instructions": 500}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(fields(&error), ["max_instructions"]);
    app.stop().await;
}

/// The per-caller rate limit holds the callback API too, and its refusal
/// is the API's JSON with `Retry-After`.
async fn a_flood_on_the_callback_api_is_refused_in_json(db: TestDb) {
    let app = TestApp::spawn_with(&db, Default::default(), |c| {
        c.rate_limit = 0.1;
        c.rate_burst = 3.0;
    })
    .await;
    let puller = register(&app, pull_processor("flooding-puller", 60_000)).await;
    let client = dsr_orchestrator::tls::http_client().unwrap();
    let send = |path: &'static str| {
        client
            .post(format!("http://{}{path}", app.addr))
            .bearer_auth(&puller)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let mut served = 0;
    let refused = loop {
        let response = send("/v1/instructions/pull").await.unwrap();
        if response.status().as_u16() != 200 {
            break response;
        }
        served += 1;
        assert!(served <= 3, "the burst is three calls");
    };
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["code"], json!("RESOURCE_EXHAUSTED"), "{error}");
    // Every method of the API is held while the caller is (a token comes
    // back every ten seconds). A path outside the API's names no caller:
    // it draws on the unidentified callers' bucket, not this one's.
    let acknowledge = "/v1/instructions/00000000-0000-4000-8000-000000000000/acknowledge";
    let held = send(acknowledge).await.unwrap();
    assert_eq!(held.status().as_u16(), 429);
    assert!(held.headers().contains_key("retry-after"));
    let error: Value = held.json().await.unwrap();
    assert_eq!(error["code"], json!("RESOURCE_EXHAUSTED"), "{error}");
    let elsewhere = send("/v1/nope").await.unwrap();
    assert_eq!(elsewhere.status().as_u16(), 404);
    let error: Value = elsewhere.json().await.unwrap();
    assert_eq!(error["code"], json!("NOT_FOUND"), "{error}");
    app.stop().await;
}
