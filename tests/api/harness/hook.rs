//! A fake webhook processor: a real HTTP server on a loopback port that
//! checks every delivery's Standard Webhooks signature itself (its own
//! HMAC, not the orchestrator's code), answers from a script, and records
//! what it received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::watch;

/// How the fake answers one POST.
#[derive(Clone, Debug)]
pub struct HookReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HookReply {
    /// 200 with `DISPOSITION_DONE` and `outcome`.
    pub fn done(outcome: &str) -> Self {
        Self::json(
            200,
            &format!(r#"{{"disposition":"DISPOSITION_DONE","result":{{"outcome":"{outcome}"}}}}"#),
        )
    }

    /// 202 with an empty body: accepted, the outcome follows by callback.
    pub fn accepted() -> Self {
        Self::json(202, "")
    }

    /// `status` with `body`.
    pub fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// The same with a header added.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// One POST as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    /// The body, parsed.
    pub event: serde_json::Value,
    /// The raw body.
    pub body: Vec<u8>,
    /// Read by `tests/telemetry.rs`, where tracing is on.
    #[allow(dead_code)]
    pub traceparent: Option<String>,
    pub at: Instant,
}

impl Received {
    /// Whether its signature is the HMAC-SHA256 of
    /// `<id>.<timestamp>.<body>` under `secret` (`whsec_` and base64).
    pub fn signed_with(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 secret");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let mut signed = format!("{}.{}.", self.webhook_id, self.timestamp).into_bytes();
        signed.extend_from_slice(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(ring::hmac::sign(&key, &signed)));
        // Several signatures may be sent, space-separated.
        self.signature.split(' ').any(|s| s == expected)
    }

    /// The event's `type`.
    pub fn event_type(&self) -> &str {
        self.event["type"].as_str().unwrap_or("")
    }

    /// The `data.instruction_id`.
    pub fn instruction_id(&self) -> &str {
        self.event["data"]["instruction_id"].as_str().unwrap_or("")
    }
}

struct Inner {
    script: VecDeque<HookReply>,
    default: HookReply,
    received: Vec<Received>,
}

/// A running fake webhook processor.
#[derive(Clone)]
pub struct FakeHook {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    calls: watch::Sender<usize>,
}

impl FakeHook {
    /// Starts one answering `default` to every POST not scripted.
    pub async fn start(default: HookReply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = Self {
            addr: listener.local_addr().unwrap(),
            inner: Arc::new(Mutex::new(Inner {
                script: VecDeque::new(),
                default,
                received: Vec::new(),
            })),
            calls: watch::Sender::new(0),
        };
        let app = Router::new()
            .route("/hooks/dsr", axum::routing::post(receive))
            .with_state(hook.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        hook
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/dsr", self.addr)
    }

    /// Answers the next POSTs with `replies`, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = HookReply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Every POST so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` POSTs arrived.
    pub async fn wait_for(&self, n: usize) {
        let mut rx = self.calls.subscribe();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= n))
            .await
            .expect("timed out waiting for webhook deliveries")
            .unwrap();
    }
}

async fn receive(State(hook): State<FakeHook>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let received = Received {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        event: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        body: body.to_vec(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        at: Instant::now(),
    };
    let reply = {
        let mut inner = hook.inner.lock().unwrap();
        inner.received.push(received);
        let default = inner.default.clone();
        inner.script.pop_front().unwrap_or(default)
    };
    hook.calls.send_modify(|c| *c += 1);
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        [(http::header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, http::HeaderValue::from_str(&value).unwrap());
    }
    response
}
