//! Push delivery over OpenDSR 2.0 (see [`crate::wire::opendsr`] for the
//! JSON and the mapping of kinds and identities).
//!
//! A first delivery POSTs the request to `{url}/opendsr/requests`, with
//! the instruction id as `subject_request_id` and, when the orchestrator
//! has a public URL, `{public_url}/opendsr/callbacks/{processor_id}` as its
//! status callback. A redelivery, a retry or a reminder first asks
//! `GET {url}/opendsr/requests/{id}` and POSTs only if the processor does
//! not know the request (404), so nothing is submitted twice. A status
//! `pending` or `in_progress` acknowledges the instruction, which is then
//! polled every `poll_interval` (its reminders are the polls) until
//! `completed` (COMPLETED) or `cancelled` (FAILED: the processor gave it
//! up; an operator looks). Callbacks, verified against the processor's
//! certificate ([`CallbackKeys`]), end it sooner. A cancel notice is
//! `DELETE {url}/opendsr/requests/{id}`.
//!
//! Statuses are classified as for webhooks (408, 429 with `Retry-After`
//! and 5xx retried, others fatal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, local};
use super::http_clients::HttpClients;
use super::webhook::{answer_body, unanswered};
use crate::clock::Clock;
use crate::domain::{
    InstructionId, InstructionResult, Outcome, ProcessorId, ProcessorTls, Timestamp,
};
use crate::wire::opendsr::{self as wire, Progress};

/// The path of a processor's callbacks under the orchestrator's public URL.
pub fn callback_path(processor: &ProcessorId) -> String {
    format!("/opendsr/callbacks/{processor}")
}

/// OpenDSR push adapter.
pub struct OpenDsrAdapter {
    clients: HttpClients,
    /// The orchestrator's public URL (callbacks are offered under it).
    public_url: Option<String>,
}

impl OpenDsrAdapter {
    /// An adapter offering callbacks under `public_url`, if given, whose
    /// connections resolve names through `lookup`.
    pub fn new(public_url: Option<String>, lookup: super::lookup::Lookup) -> Self {
        Self {
            clients: HttpClients::new(lookup),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
        }
    }

    /// `{url}/opendsr/requests[/{id}]`.
    fn requests_url(endpoint: &Endpoint<'_>, id: Option<InstructionId>) -> String {
        let base = endpoint.uri.trim_end_matches('/');
        match id {
            Some(id) => format!("{base}/opendsr/requests/{id}"),
            None => format!("{base}/opendsr/requests"),
        }
    }

    /// Sends `request`; the answer's body, or `None` for a 404.
    async fn send(
        &self,
        endpoint: &Endpoint<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Vec<u8>>, DeliveryError> {
        let mut request = request.timeout(endpoint.timeout);
        for (name, value) in crate::telemetry::trace_headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| unanswered(&e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer_body(response, chrono::Utc::now()).await.map(Some)
    }

    /// The processor's status of `id`; `None` if it does not know it.
    async fn status(
        &self,
        endpoint: &Endpoint<'_>,
        id: InstructionId,
    ) -> Result<Option<wire::Status>, DeliveryError> {
        let client = self.clients.get(endpoint.uri, endpoint.tls)?;
        let request = client.get(Self::requests_url(endpoint, Some(id)));
        match self.send(endpoint, request).await? {
            None => Ok(None),
            Some(body) => status_of(&body).map(Some),
        }
    }
}

/// A processor's status from the body of its answer ([`wire::Status::parse`]).
pub fn status_of(body: &[u8]) -> Result<wire::Status, DeliveryError> {
    wire::Status::parse(body).map_err(|why| DeliveryError::fatal("INVALID_RESULT", why))
}

/// What a status means for the instruction.
pub fn answer_of(status: &wire::Status) -> Result<Answer, DeliveryError> {
    match status.progress() {
        Some(Progress::Open) => Ok(Answer::Accepted),
        Some(Progress::Completed) => Ok(Answer::Done(done(Outcome::Completed, ""))),
        Some(Progress::Cancelled) => Ok(Answer::Done(done(
            Outcome::Failed,
            "the processor cancelled the OpenDSR request",
        ))),
        None => Err(DeliveryError::fatal(
            "INVALID_RESULT",
            "request_status must be pending, in_progress, completed or cancelled",
        )),
    }
}

fn done(outcome: Outcome, reason: &str) -> InstructionResult {
    InstructionResult::new(outcome, None, "", reason, Vec::new(), Vec::new())
        .expect("a completion, or a failure with a reason, is a valid result")
}

#[tonic::async_trait]
impl Adapter for OpenDsrAdapter {
    async fn deliver(
        &self,
        endpoint: Endpoint<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, DeliveryError> {
        let i = delivery.instruction;
        // Anything but the very first delivery may find the request there.
        if (delivery.reminder || i.attempts > 1)
            && let Some(status) = self.status(&endpoint, i.id).await?
        {
            return answer_of(&status);
        }
        let callback = self
            .public_url
            .as_ref()
            .map(|u| format!("{u}{}", callback_path(&i.processor_id)));
        let Some(body) = wire::new_request(i, delivery.identities, callback) else {
            return Err(DeliveryError::fatal(
                local::UNSUPPORTED_KIND,
                format!("OpenDSR has no request type for {}", i.kind),
            ));
        };
        let client = self.clients.get(endpoint.uri, endpoint.tls)?;
        let request = client.post(Self::requests_url(&endpoint, None)).json(&body);
        match self.send(&endpoint, request).await? {
            Some(_) => Ok(Answer::Accepted),
            None => Err(DeliveryError::fatal(
                "HTTP_404",
                "the processor has no /opendsr/requests",
            )),
        }
    }

    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        _reason: &str,
    ) -> Result<(), DeliveryError> {
        let client = self.clients.get(endpoint.uri, endpoint.tls)?;
        let request = client.delete(Self::requests_url(&endpoint, Some(instruction)));
        // A request the processor never had has nothing to stop.
        self.send(&endpoint, request).await.map(drop)
    }
}

/// Why a callback is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `X-OpenDSR-Signature`.
    #[error("the callback is not signed (no X-OpenDSR-Signature)")]
    Unsigned,
    /// A signature that does not verify with the processor's key.
    #[error("the callback's signature does not verify with the processor's certificate")]
    BadSignature,
    /// The processor's certificate could not be had, and why: for the
    /// server's log, not for the caller, who is not yet known to be the
    /// processor (what a fetch ran into can name the processor's
    /// addresses and settings).
    #[error(
        "the processor's certificate could not be fetched (the server's log says why): retry later"
    )]
    NoCertificate(String),
}

/// How long a processor's certificate is used before it is fetched again.
const KEY_TTL: Duration = Duration::from_secs(3600);
/// Least time between fetches after a signature failed to verify (the
/// processor may have rotated its key).
const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// The keys OpenDSR processors sign their callbacks with: the public key
/// of the certificate each one's `/discovery` names, kept per processor
/// and base URL and fetched again hourly, or when a signature fails to
/// verify (at most every 30 s). A fetch that failed is not tried again for
/// 30 s either: anyone may post a callback with some signature, and each
/// would otherwise make the server call the processor twice. Callbacks
/// that need a fetch at once wait for one, not one each. The fetches
/// connect where the lookup allows, as deliveries do; the certificate's
/// URL, which no registration checked, is checked by the registration's
/// rules first.
pub struct CallbackKeys {
    clients: HttpClients,
    keys: Mutex<HashMap<KeyOf, Kept>>,
    /// When a fetch last failed, per processor and base URL.
    failed: Mutex<HashMap<KeyOf, Timestamp>>,
    /// Held while a fetch runs, per processor and base URL.
    fetching: Mutex<HashMap<KeyOf, Arc<tokio::sync::Mutex<()>>>>,
    clock: Arc<dyn Clock>,
}

impl CallbackKeys {
    /// Keys fetched through connections that resolve names with `lookup`,
    /// their age told by `clock`.
    pub fn new(lookup: super::lookup::Lookup, clock: Arc<dyn Clock>) -> Self {
        Self {
            clients: HttpClients::new(lookup),
            keys: Mutex::default(),
            failed: Mutex::default(),
            fetching: Mutex::default(),
            clock,
        }
    }
}

/// A processor's key (PKCS#1 DER) and when it was fetched.
type Kept = (Vec<u8>, Timestamp);

/// Whose key: the processor and its base URL.
type KeyOf = (ProcessorId, String);

impl CallbackKeys {
    /// Checks that `signature` (the header's value, base64) is the
    /// processor's RSA-SHA256 signature of `body`.
    pub async fn verify(
        &self,
        processor: &ProcessorId,
        url: &str,
        tls: Option<&ProcessorTls>,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refused> {
        use base64::Engine;
        let signature = signature.ok_or(Refused::Unsigned)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| Refused::BadSignature)?;
        let key_of = (processor.clone(), url.to_string());
        let verifies = |key: &[u8]| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
                .verify(body, &signature)
                .is_ok()
        };
        if let Some(decided) = self.without_fetch(&key_of, verifies) {
            return decided;
        }
        let gate = self
            .fetching
            .lock()
            .expect("keys lock")
            .entry(key_of.clone())
            .or_default()
            .clone();
        let _fetching = gate.lock().await;
        // A fetch that ended while this call waited decides it as well.
        if let Some(decided) = self.without_fetch(&key_of, verifies) {
            return decided;
        }
        let now = self.clock.now();
        let key = match self.fetch(url, tls).await {
            Ok(key) => key,
            Err(why) => {
                self.failed.lock().expect("keys lock").insert(key_of, now);
                return Err(Refused::NoCertificate(why));
            }
        };
        self.failed.lock().expect("keys lock").remove(&key_of);
        let ok = verifies(&key);
        self.keys
            .lock()
            .expect("keys lock")
            .insert(key_of, (key, now));
        if ok {
            Ok(())
        } else {
            Err(Refused::BadSignature)
        }
    }

    /// The answer the key kept for `key_of`, or its last failed fetch,
    /// gives without fetching: `None` when a fetch is due.
    fn without_fetch(
        &self,
        key_of: &KeyOf,
        verifies: impl Fn(&[u8]) -> bool,
    ) -> Option<Result<(), Refused>> {
        let now = self.clock.now();
        let within = |at: &Timestamp, span: Duration| (now - *at).to_std().is_ok_and(|d| d < span);
        let kept = self.keys.lock().expect("keys lock").get(key_of).cloned();
        if let Some((key, at)) = &kept {
            if verifies(key) && within(at, KEY_TTL) {
                return Some(Ok(()));
            }
            if within(at, REFETCH_AFTER) {
                return Some(Err(Refused::BadSignature));
            }
        }
        let failed = self.failed.lock().expect("keys lock").get(key_of).copied();
        if failed.is_some_and(|at| within(&at, REFETCH_AFTER)) {
            return Some(Err(Refused::NoCertificate(format!(
                "its last fetch failed less than {REFETCH_AFTER:?} ago"
            ))));
        }
        None
    }

    /// The RSA public key (PKCS#1 DER) of the certificate the processor's
    /// discovery document names.
    async fn fetch(&self, url: &str, tls: Option<&ProcessorTls>) -> Result<Vec<u8>, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        let client = self.clients.get(url, tls).map_err(|e| fail("client", &e))?;
        let timeout = Duration::from_secs(10);
        let discovery: wire::Discovery = client
            .get(format!("{}/discovery", url.trim_end_matches('/')))
            .timeout(timeout)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail("discovery", &e))?
            .json()
            .await
            .map_err(|e| fail("discovery", &e))?;
        let certificate = self
            .clients
            .may_fetch(&discovery.processor_certificate)
            .await
            .map_err(|e| fail("certificate", &e))?;
        let client = self
            .clients
            .get(&certificate, tls)
            .map_err(|e| fail("client", &e))?;
        let pem = client
            .get(&certificate)
            .timeout(timeout)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail("certificate", &e))?
            .bytes()
            .await
            .map_err(|e| fail("certificate", &e))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(&pem).map_err(|e| fail("certificate", &e))?;
        let cert = pem.parse_x509().map_err(|e| fail("certificate", &e))?;
        Ok(cert.public_key().subject_public_key.data.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_answers() {
        let status = |s: &str| wire::Status {
            subject_request_id: "x".into(),
            request_status: s.into(),
            expected_completion_time: None,
            api_version: None,
        };
        assert!(matches!(
            answer_of(&status("pending")),
            Ok(Answer::Accepted)
        ));
        assert!(matches!(
            answer_of(&status("completed")),
            Ok(Answer::Done(r)) if r.outcome == Outcome::Completed
        ));
        assert!(matches!(
            answer_of(&status("cancelled")),
            Ok(Answer::Done(r)) if r.outcome == Outcome::Failed
        ));
        assert!(answer_of(&status("lost")).is_err());
    }
}
