//! A fake OpenDSR processor: a real HTTP server on a loopback port with
//! `POST /opendsr/requests`, `GET` and `DELETE /opendsr/requests/{id}`,
//! `GET /discovery` and the certificate it names. It signs what it sends
//! (its status callbacks, which the test posts) with an RSA key made for
//! it at start, both by the `openssl` command, not the orchestrator's
//! code or its libraries.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::watch;

use super::hook::HookReply;

struct Inner {
    /// Answers to the next POSTs; then 201.
    script: VecDeque<HookReply>,
    /// The status each known request reports.
    statuses: HashMap<String, String>,
    /// Every POST body, and every DELETE's id.
    posted: Vec<serde_json::Value>,
    deleted: Vec<String>,
    /// GETs of a request's status.
    polls: usize,
    /// How many of the next status GETs to answer 503 (the processor is
    /// away).
    failing_polls: usize,
    /// Where its discovery says its certificate is, if not at its own
    /// `/cert.pem`.
    certificate_at: Option<String>,
    /// GETs of its certificate.
    certificate_fetches: usize,
    /// GETs of its discovery document.
    discoveries: usize,
    /// How long it takes to answer a POST or a status GET (a slow
    /// processor).
    slowness: std::time::Duration,
    /// How long it takes to answer a GET of its discovery document.
    discovery_slowness: std::time::Duration,
}

/// A running fake OpenDSR processor.
#[derive(Clone)]
pub struct FakeOpenDsr {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    calls: watch::Sender<usize>,
    key_path: Arc<std::path::PathBuf>,
    cert_pem: Arc<String>,
    _dir: Arc<tempfile::TempDir>,
}

impl FakeOpenDsr {
    /// Starts one with a fresh RSA key and self-signed certificate.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("key.pem");
        let cert_path = dir.path().join("cert.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=opendsr.fake.example", "-keyout"])
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            addr: listener.local_addr().unwrap(),
            inner: Arc::new(Mutex::new(Inner {
                script: VecDeque::new(),
                statuses: HashMap::new(),
                posted: Vec::new(),
                deleted: Vec::new(),
                polls: 0,
                failing_polls: 0,
                certificate_at: None,
                certificate_fetches: 0,
                discoveries: 0,
                slowness: std::time::Duration::ZERO,
                discovery_slowness: std::time::Duration::ZERO,
            })),
            calls: watch::Sender::new(0),
            key_path: Arc::new(key_path),
            cert_pem: Arc::new(std::fs::read_to_string(&cert_path).unwrap()),
            _dir: Arc::new(dir),
        };
        let app = Router::new()
            .route("/opendsr/requests", axum::routing::post(create))
            .route("/opendsr/requests/{id}", get(status).delete(cancel))
            .route("/discovery", get(discovery))
            .route("/cert.pem", get(certificate))
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    /// The base URL to register.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Names `url` as its certificate in its discovery document; `None`:
    /// its own `/cert.pem`.
    pub fn name_certificate_at(&self, url: Option<&str>) {
        self.inner.lock().unwrap().certificate_at = url.map(str::to_string);
    }

    /// Answers each POST and status GET `slowness` after it came.
    pub fn answer_after(&self, slowness: std::time::Duration) {
        self.inner.lock().unwrap().slowness = slowness;
    }

    /// Answers each GET of its discovery document `slowness` after it
    /// came.
    pub fn answer_discovery_after(&self, slowness: std::time::Duration) {
        self.inner.lock().unwrap().discovery_slowness = slowness;
    }

    /// How many times its discovery document was fetched.
    pub fn discoveries(&self) -> usize {
        self.inner.lock().unwrap().discoveries
    }

    /// How many times its certificate was fetched.
    pub fn certificate_fetches(&self) -> usize {
        self.inner.lock().unwrap().certificate_fetches
    }

    /// Answers the next POSTs with these before the usual 201.
    pub fn script(&self, replies: impl IntoIterator<Item = HookReply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Makes request `id` report `status`.
    pub fn set_status(&self, id: &str, status: &str) {
        self.inner
            .lock()
            .unwrap()
            .statuses
            .insert(id.to_string(), status.to_string());
    }

    /// Answers the next `n` status GETs with 503.
    pub fn fail_polls(&self, n: usize) {
        self.inner.lock().unwrap().failing_polls = n;
    }

    /// The POSTed requests.
    pub fn posted(&self) -> Vec<serde_json::Value> {
        self.inner.lock().unwrap().posted.clone()
    }

    /// The ids DELETEd.
    pub fn deleted(&self) -> Vec<String> {
        self.inner.lock().unwrap().deleted.clone()
    }

    /// How many status GETs came.
    pub fn polls(&self) -> usize {
        self.inner.lock().unwrap().polls
    }

    /// Waits until `n` calls (POST, GET of a status, DELETE) came.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut rx = self.calls.subscribe();
        tokio::time::timeout(std::time::Duration::from_secs(30), rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} calls to the fake OpenDSR processor"))
            .unwrap();
    }

    /// The base64 RSA-SHA256 (PKCS#1 v1.5) signature of `body` with this
    /// processor's key, made by `openssl dgst`.
    pub fn sign(&self, body: &[u8]) -> String {
        use std::io::Write;
        let mut openssl = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.key_path.as_path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        openssl.stdin.take().unwrap().write_all(body).unwrap();
        let signed = openssl.wait_with_output().unwrap();
        assert!(signed.status.success());
        STANDARD.encode(signed.stdout)
    }

    /// A status callback body for request `id`.
    pub fn callback_body(id: &str, status: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "controller_id": "dsr-orchestrator",
            "expected_completion_time": "2026-12-31T00:00:00Z",
            "status_callback_url": "https://orchestrator.test/opendsr/callbacks",
            "subject_request_id": id,
            "request_status": status,
            "api_version": "2.0",
        }))
        .unwrap()
    }

    fn called(&self) {
        self.calls.send_modify(|c| *c += 1);
    }
}

async fn create(State(fake): State<FakeOpenDsr>, body: Bytes) -> Response {
    let slowness = fake.inner.lock().unwrap().slowness;
    // A slow processor, as the test asks: time, not a stand-in for a wait.
    tokio::time::sleep(slowness).await;
    let request: serde_json::Value = serde_json::from_slice(&body).expect("JSON request");
    let reply = {
        let mut inner = fake.inner.lock().unwrap();
        let reply = inner.script.pop_front();
        if reply.as_ref().is_none_or(|r| r.status < 300) {
            let id = request["subject_request_id"].as_str().unwrap().to_string();
            inner.statuses.entry(id).or_insert_with(|| "pending".into());
        }
        inner.posted.push(request.clone());
        reply
    };
    fake.called();
    match reply {
        Some(r) => {
            let mut response = (StatusCode::from_u16(r.status).unwrap(), r.body).into_response();
            for (name, value) in r.headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        None => {
            let answer = serde_json::json!({
                "controller_id": "dsr-orchestrator",
                "expected_completion_time": "2026-12-31T00:00:00Z",
                "received_time": "2026-12-04T00:00:00Z",
                "subject_request_id": request["subject_request_id"],
            });
            (StatusCode::CREATED, axum::Json(answer)).into_response()
        }
    }
}

async fn status(State(fake): State<FakeOpenDsr>, Path(id): Path<String>) -> Response {
    let slowness = fake.inner.lock().unwrap().slowness;
    tokio::time::sleep(slowness).await;
    let (status, away) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.polls += 1;
        let away = inner.failing_polls > 0;
        inner.failing_polls = inner.failing_polls.saturating_sub(1);
        (inner.statuses.get(&id).cloned(), away)
    };
    fake.called();
    match status {
        _ if away => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
        Some(s) => axum::Json(serde_json::json!({
            "controller_id": "dsr-orchestrator",
            "expected_completion_time": "2026-12-31T00:00:00Z",
            "subject_request_id": id,
            "request_status": s,
            "api_version": "2.0",
        }))
        .into_response(),
    }
}

async fn cancel(State(fake): State<FakeOpenDsr>, Path(id): Path<String>) -> Response {
    let known = {
        let mut inner = fake.inner.lock().unwrap();
        inner.deleted.push(id.clone());
        inner
            .statuses
            .insert(id.clone(), "cancelled".into())
            .is_some()
    };
    fake.called();
    if known {
        StatusCode::ACCEPTED.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn discovery(State(fake): State<FakeOpenDsr>) -> Response {
    let (certificate, slowness) = {
        let mut inner = fake.inner.lock().unwrap();
        inner.discoveries += 1;
        (inner.certificate_at.clone(), inner.discovery_slowness)
    };
    tokio::time::sleep(slowness).await;
    axum::Json(serde_json::json!({
        "api_version": "2.0",
        "supported_identities": [{"identity_type": "email", "identity_format": "raw"}],
        "supported_subject_request_types": ["erasure", "access"],
        "processor_certificate": certificate.unwrap_or_else(|| format!("{}/cert.pem", fake.url())),
    }))
    .into_response()
}

async fn certificate(State(fake): State<FakeOpenDsr>) -> Response {
    fake.inner.lock().unwrap().certificate_fetches += 1;
    fake.cert_pem.as_str().to_string().into_response()
}
