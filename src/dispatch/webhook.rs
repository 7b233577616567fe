//! Push delivery as Standard Webhooks (<https://www.standardwebhooks.com>):
//! each delivery is an HTTP POST of a JSON event (`dsr.instruction.deliver`,
//! `dsr.instruction.remind` or `dsr.instruction.cancel`, see
//! [`crate::wire::json`]) signed with the processor's secret:
//!
//! - `webhook-id`: the instruction id and the attempt (`<id>_<attempt>`,
//!   and `_r<n>` for the n-th reminder), the same on a redelivery of the
//!   same attempt, so a processor can de-duplicate on it;
//! - `webhook-timestamp`: seconds since the epoch;
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256, keyed with the
//!   secret's bytes, of `<id>.<timestamp>.<body>`.
//!
//! The answer decides: a 2xx acknowledges (an empty body, or
//! `{"disposition": "DISPOSITION_ACCEPTED"}`) or completes
//! (`{"disposition": "DISPOSITION_DONE", "result": {...}}`); 408, 429 and
//! 5xx, and a connection that fails or times out, are retried (after the
//! `Retry-After` the processor names, when it names one); 410 Gone and
//! every other status are fatal: the processor will not take this
//! instruction as sent, an operator must look. No redirect is followed.
//!
//! Clients are kept per set of TLS files (see the `http_clients` module).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use super::adapter::{Answer, Delivery, DeliveryError, Endpoint, Protocol, local};
use super::grpc::answer_of;
use super::http_clients::HttpClients;
use super::lookup::{Lookup, refusal};
use crate::domain::{InstructionId, InstructionView, Timestamp};
use crate::wire::{self, json};

/// The most of a processor's answer that is read (10,000 data records
/// with room to spare); a longer answer is fatal.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The longest `Retry-After` taken as asked; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Webhook push adapter with a client cache per set of TLS files.
pub struct WebhookAdapter {
    clients: HttpClients,
}

impl WebhookAdapter {
    /// An adapter whose connections resolve names through `lookup`.
    pub fn new(lookup: Lookup) -> Self {
        Self {
            clients: HttpClients::new(lookup),
        }
    }
}

/// The signature of one message: `v1,` and the base64 HMAC-SHA256 of
/// `<id>.<timestamp>.<body>` keyed with the secret's bytes (the base64
/// after `whsec_`). `None` for a secret that is not such base64.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(format!("{id}.{timestamp}.").as_bytes());
    context.update(body);
    Some(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

/// The `webhook-id` of a delivery of `i` as claimed (its `attempts` and
/// `reminders` count this delivery): unique per attempt and per reminder,
/// `_r<n>` for the n-th.
fn message_id(i: &InstructionView, reminder: bool) -> String {
    let reminder = reminder.then_some(i.reminders);
    id_of_delivery(&i.id.to_string(), i.attempts, reminder)
}

fn id_of_delivery(instruction: &str, attempt: u32, reminder: Option<u32>) -> String {
    match reminder {
        Some(n) => format!("{instruction}_{attempt}_r{n}"),
        None => format!("{instruction}_{attempt}"),
    }
}

/// How long a `Retry-After` asks to wait: delay-seconds or an HTTP date.
pub(super) fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    let seconds = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let wait = if seconds {
        // More seconds than a u64 holds still asks for the longest wait.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What a non-2xx status means.
pub(super) fn refused(status: reqwest::StatusCode, after: Option<Duration>) -> DeliveryError {
    let code = format!("HTTP_{}", status.as_u16());
    let message = format!(
        "the processor answered {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let retryable = status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retryable {
        DeliveryError::Retryable {
            code,
            message,
            after,
        }
    } else {
        DeliveryError::Fatal { code, message }
    }
}

/// A failed request that got no answer: always worth retrying.
pub(super) fn unanswered(e: &reqwest::Error) -> DeliveryError {
    if e.is_timeout() {
        DeliveryError::retryable("DEADLINE_EXCEEDED", "the processor did not answer in time")
    } else if let Some(refused) = refusal(e) {
        DeliveryError::retryable("UNAVAILABLE", format!("not connected: {refused}"))
    } else if e.is_connect() {
        DeliveryError::retryable("UNAVAILABLE", "cannot connect to the processor")
    } else {
        DeliveryError::retryable("UNAVAILABLE", "the connection to the processor failed")
    }
}

/// The answer's body, `Retry-After` honoured on a refusal; at most
/// [`MAX_ANSWER_BYTES`].
pub(super) async fn answer_body(
    mut response: reqwest::Response,
    now: Timestamp,
) -> Result<Vec<u8>, DeliveryError> {
    let status = response.status();
    if !status.is_success() {
        let after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, now));
        return Err(refused(status, after));
    }
    let mut answer = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unanswered(&e))? {
        if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(DeliveryError::fatal(
                "INVALID_RESULT",
                format!("the answer is longer than {MAX_ANSWER_BYTES} bytes"),
            ));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}

impl WebhookAdapter {
    /// POSTs one signed event; returns the answer's body.
    async fn post<T: serde::Serialize>(
        &self,
        endpoint: &Endpoint<'_>,
        id: &str,
        event_type: &str,
        data: T,
    ) -> Result<Vec<u8>, DeliveryError> {
        let Protocol::Webhook { secret } = endpoint.protocol else {
            return Err(DeliveryError::fatal(
                local::BAD_ENDPOINT,
                "not a webhook endpoint",
            ));
        };
        let now = chrono::Utc::now();
        let body = serde_json::to_vec(&json::Event {
            event_type: event_type.to_string(),
            timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            data,
        })
        .expect("events always serialise");
        let signature = sign(secret, id, now.timestamp(), &body).ok_or_else(|| {
            DeliveryError::fatal(
                local::BAD_WEBHOOK_SECRET,
                "the stored webhook secret is not whsec_ and base64; rotate it",
            )
        })?;
        let mut request = self
            .clients
            .get(endpoint.uri, endpoint.tls)?
            .post(endpoint.uri)
            .timeout(endpoint.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.timestamp().to_string())
            .header("webhook-signature", signature);
        for (name, value) in crate::telemetry::trace_headers() {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| unanswered(&e))?;
        answer_body(response, now).await
    }
}

/// What the body of a processor's 2xx answer to a delivery means: empty
/// (or blank), accepted; else a `DeliveryAnswer` in JSON. A body that is
/// not one, or whose result is not valid, fails the delivery for good
/// (`INVALID_RESULT`): the processor must be fixed, an operator looks.
pub fn answer_of_body(body: &[u8]) -> Result<Answer, DeliveryError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer::Accepted);
    }
    let answer: json::DeliveryAnswer = serde_json::from_slice(body)
        .map_err(|e| DeliveryError::fatal("INVALID_RESULT", json::decode_error(&e)))?;
    let answer = json::answer_pb(answer)
        .map_err(|v| DeliveryError::fatal("INVALID_RESULT", v.to_string()))?;
    answer_of(answer)
}

#[tonic::async_trait]
impl super::adapter::Adapter for WebhookAdapter {
    async fn deliver(
        &self,
        endpoint: Endpoint<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, DeliveryError> {
        let message = wire::deliver_request(
            delivery.instruction,
            delivery.identities,
            delivery.reminder,
            delivery.request,
        );
        let event_type = if delivery.reminder {
            "dsr.instruction.remind"
        } else {
            "dsr.instruction.deliver"
        };
        let id = message_id(delivery.instruction, delivery.reminder);
        let body = self
            .post(&endpoint, &id, event_type, json::delivery(&message))
            .await?;
        answer_of_body(&body)
    }

    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        let id = format!("{instruction}_cancel");
        let data = json::Cancellation {
            instruction_id: instruction.to_string(),
            reason: reason.to_string(),
        };
        self.post(&endpoint, &id, "dsr.instruction.cancel", data)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification, as its own
    /// reference libraries verify it.
    #[test]
    fn signs_like_the_specification() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("whsec_not base64!", "m", 1, b""), None);
    }

    /// Signatures the `standardwebhooks` package computed (checked again
    /// by the chart tests' `test_webhook_signatures.py`).
    #[test]
    fn signs_like_the_reference_library() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhook_signatures.json"
        ))
        .unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let signature = sign(
                case["secret"].as_str().unwrap(),
                case["id"].as_str().unwrap(),
                case["timestamp"].as_i64().unwrap(),
                case["body"].as_str().unwrap().as_bytes(),
            );
            assert_eq!(signature.as_deref(), case["signature"].as_str());
        }
    }

    #[test]
    fn the_first_reminder_is_r1() {
        // As claimed: the claim counted the reminder it delivers.
        assert_eq!(id_of_delivery("i", 2, Some(1)), "i_2_r1");
        assert_eq!(id_of_delivery("i", 2, None), "i_2");
    }

    #[test]
    fn statuses_and_retry_after() {
        use reqwest::StatusCode;
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Fri, 04 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("99999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after("soon", now), None);
        for retried in [
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(
                matches!(refused(retried, None), DeliveryError::Retryable { .. }),
                "{retried}"
            );
        }
        for fatal in [
            StatusCode::GONE,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::MOVED_PERMANENTLY,
        ] {
            assert!(
                matches!(refused(fatal, None), DeliveryError::Fatal { .. }),
                "{fatal}"
            );
        }
        assert_eq!(refused(StatusCode::GONE, None).code(), "HTTP_410");
    }
}
