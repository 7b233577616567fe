//! OpenDSR status callbacks: `POST /opendsr/callbacks/{processor_id}`,
//! the URL the orchestrator gives OpenDSR processors as their
//! `status_callback_urls` (under `--public-url`).
//!
//! A callback carries no bearer token: it is the processor's because its
//! raw body verifies against `X-OpenDSR-Signature` (base64 RSA-SHA256;
//! the older `X-OpenGDPR-Signature` is read too) with the key of the
//! certificate the processor's `/discovery` names
//! ([`crate::dispatch::opendsr::CallbackKeys`]). Refused: an unsigned
//! callback (401), a bad signature (403), a processor whose certificate
//! cannot be had (503, so it calls again); each is counted in
//! `dsr_opendsr_callbacks_total`. A verified one is handed, as that
//! processor, to the processor methods of `InstructionService`: `pending`
//! and `in_progress` acknowledge, `completed` completes, `cancelled`
//! fails the instruction, with their validation and idempotency (a repeat
//! is harmless). A verified callback is answered 202. Every refusal is
//! the HTTP callback API's JSON error (`code`, `message`), a body over
//! `--max-message-size` too (400, `OUT_OF_RANGE`), a path that is not
//! UTF-8 (404, as an unknown processor), and another method than POST is
//! 405.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::error::ApiError;
use super::http::{PathParam, error_response, post_only};
use super::instruction_service::InstructionApi;
use crate::auth::Caller;
use crate::dispatch::opendsr::{CallbackKeys, Refused};
use crate::domain::{AdapterConfig, ProcessorId, ProcessorTls};
use crate::pb;
use crate::pb::instruction_service_server::InstructionService;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::wire::opendsr::{Progress, Status};

/// The callbacks' route.
pub const CALLBACK: &str = "/opendsr/callbacks/{processor_id}";

/// What the callbacks need.
#[derive(Clone)]
pub struct OpenDsrCallbacks {
    /// The processors' instructions.
    pub instructions: InstructionApi,
    /// The registry.
    pub store: Store,
    /// The processors' signing keys.
    pub keys: Arc<CallbackKeys>,
    /// Where refusals are counted.
    pub metrics: Arc<Metrics>,
}

/// The callbacks' routes; bodies longer than `max_body` are refused.
pub fn router(callbacks: OpenDsrCallbacks, max_body: usize) -> Router {
    Router::new()
        .route(
            CALLBACK,
            post(callback).fallback(|| async { post_only("an OpenDSR callback is a POST") }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(callbacks)
}

async fn callback(
    State(this): State<OpenDsrCallbacks>,
    PathParam(processor_id): PathParam,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(id) = ProcessorId::parse(&processor_id) else {
        return error_response(&tonic::Status::not_found("no such OpenDSR processor"));
    };
    let Ok(body) = body else {
        return error_response(&tonic::Status::out_of_range(
            "the body is longer than --max-message-size, or could not be read",
        ));
    };
    let (answer, counted, known) = this.take(&id, &headers, &body).await;
    // Counted under the processor's id only when it names an OpenDSR
    // processor: a path anyone may post to makes no series of its own.
    let label = if known { id.as_str() } else { "unknown" };
    this.metrics.opendsr_callback(label, counted);
    answer
}

impl OpenDsrCallbacks {
    /// The answer to one callback, how it is counted, and whether `id`
    /// names an OpenDSR processor.
    async fn take(
        &self,
        id: &ProcessorId,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Response, &'static str, bool) {
        let no_such = || {
            let status = tonic::Status::not_found("no such OpenDSR processor");
            (error_response(&status), "rejected", false)
        };
        let processor = match self.store.processor(id).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => return no_such(),
            // What the database said is logged, not told to a caller not
            // yet proved.
            Err(e) => return (error_response(&ApiError::from(e).into()), "rejected", false),
        };
        let AdapterConfig::OpenDsr { url, tls, .. } = &processor.spec.adapter else {
            return no_such();
        };
        let (answer, counted) = self.verified(id, url, tls.as_ref(), headers, body).await;
        (answer, counted, true)
    }

    /// The answer to a callback for the OpenDSR processor `id` at `url`,
    /// and how it is counted.
    async fn verified(
        &self,
        id: &ProcessorId,
        url: &str,
        tls: Option<&ProcessorTls>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Response, &'static str) {
        let signature = ["x-opendsr-signature", "x-opengdpr-signature"]
            .iter()
            .find_map(|h| headers.get(*h))
            .and_then(|v| v.to_str().ok());
        if let Err(refused) = self.keys.verify(id, url, tls, signature, body).await {
            let detail = match &refused {
                Refused::NoCertificate(detail) => detail.as_str(),
                _ => "",
            };
            tracing::warn!(processor_id = %id, why = %refused, detail, "OpenDSR callback refused");
            let why = refused.to_string();
            let (status, counted) = match &refused {
                Refused::Unsigned => (tonic::Status::unauthenticated(why), "unsigned"),
                Refused::BadSignature => (tonic::Status::permission_denied(why), "bad_signature"),
                Refused::NoCertificate(_) => (tonic::Status::unavailable(why), "no_certificate"),
            };
            let mut answer = error_response(&status);
            // A signature is asked for, not a bearer token.
            answer.headers_mut().remove(http::header::WWW_AUTHENTICATE);
            return (answer, counted);
        }
        let status = match Status::parse(body) {
            Ok(s) => s,
            Err(why) => {
                let status = tonic::Status::invalid_argument(why);
                return (error_response(&status), "rejected");
            }
        };
        match self.apply(id, &status).await {
            Ok(()) => (StatusCode::ACCEPTED.into_response(), "applied"),
            Err(status) => (error_response(&status), "rejected"),
        }
    }

    /// Hands the status to the processor methods, as the processor.
    async fn apply(&self, id: &ProcessorId, status: &Status) -> Result<(), tonic::Status> {
        let instruction_id = status.subject_request_id.clone();
        let result = |outcome: pb::Outcome, reason: &str| pb::InstructionResult {
            outcome: outcome as i32,
            reason: reason.to_string(),
            ..pb::InstructionResult::default()
        };
        let completed = match status.progress() {
            None => {
                return Err(tonic::Status::invalid_argument(
                    "request_status must be pending, in_progress, completed or cancelled",
                ));
            }
            Some(Progress::Open) => {
                let request =
                    as_processor(id, pb::AcknowledgeInstructionRequest { instruction_id });
                return self
                    .instructions
                    .acknowledge_instruction(request)
                    .await
                    .map(drop);
            }
            Some(Progress::Completed) => result(pb::Outcome::Completed, ""),
            Some(Progress::Cancelled) => result(
                pb::Outcome::Failed,
                "the processor cancelled the OpenDSR request",
            ),
        };
        let request = as_processor(
            id,
            pb::CompleteInstructionRequest {
                instruction_id,
                result: Some(completed),
            },
        );
        self.instructions
            .complete_instruction(request)
            .await
            .map(drop)
    }
}

/// `message` as a call from processor `id`.
fn as_processor<T>(id: &ProcessorId, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .extensions_mut()
        .insert(Caller::Processor(id.clone()));
    request
}
