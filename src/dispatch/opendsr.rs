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

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, local};
use super::http_clients::HttpClients;
use super::webhook::{answer_body, unanswered};
use crate::domain::{InstructionId, InstructionResult, Outcome, ProcessorId};
use crate::wire::opendsr::{self as wire, Progress};

pub use super::callback_keys::{CallbackKeys, Refused};

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
