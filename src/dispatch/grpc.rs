//! Push delivery over gRPC: the orchestrator calls the processor's
//! `dsr.v1.ProcessorAdapter`. Channels are created lazily, one per endpoint,
//! and reused (HTTP/2 multiplexes every in-flight delivery to a processor on
//! one connection). Status codes are classified here: UNAVAILABLE,
//! DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED and INTERNAL are worth
//! retrying, and so is any failure of the connection itself (refused,
//! reset, a TLS handshake the processor ended); any other code the
//! processor sends means it will not accept this instruction as sent, so
//! an operator must look.
//!
//! Protobuf conversion goes through [`crate::wire`], the crate's one
//! boundary between wire and domain types.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::Code;
use tonic::transport::Channel;

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, local};
use super::lookup::{Lookup, connector, refusal};
use crate::domain::InstructionId;
use crate::pb::deliver_instruction_response::Disposition;
use crate::pb::processor_adapter_client::ProcessorAdapterClient;
use crate::pb::{CancelInstructionRequest, DeliverInstructionResponse};
use crate::tls::client::{Freshness, processor_tls};
use crate::wire;

/// gRPC push adapter with a per-endpoint channel cache.
pub struct GrpcAdapter {
    channels: Channels,
}

impl GrpcAdapter {
    /// An adapter whose connections resolve names through `lookup`.
    pub fn new(lookup: Lookup) -> Self {
        Self {
            channels: Channels::new(lookup),
        }
    }
}

/// Channels to push endpoints, created lazily, one per endpoint, and
/// rebuilt when the endpoint's TLS files change; each connection goes
/// only where the lookup allows (see [`super::lookup`]).
pub(super) struct Channels {
    kept: Mutex<HashMap<String, Kept>>,
    lookup: Lookup,
}

/// Whether a status code from a processor is worth retrying.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}

/// A processor's status as a delivery error: retryable or fatal.
pub(super) fn classify(status: &tonic::Status) -> DeliveryError {
    let code = code_name(status.code()).to_string();
    let message = status.message().chars().take(500).collect();
    // A status made by our own transport, not sent by the processor (a
    // connection refused or reset, a TLS handshake the processor ended,
    // as it does for a missing client certificate): the processor said
    // nothing, and may well be reached next time.
    let from_transport = std::error::Error::source(status)
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
    if let Some(refused) = from_transport.then(|| refusal(status)).flatten() {
        return DeliveryError::retryable("UNAVAILABLE", format!("not connected: {refused}"));
    }
    if is_retryable(status.code()) || from_transport {
        DeliveryError::Retryable {
            code,
            message,
            after: None,
        }
    } else {
        DeliveryError::Fatal { code, message }
    }
}

/// The answer a processor's `DeliverInstructionResponse` (over gRPC, or
/// as a webhook's JSON) gives; an unusable one is fatal, its message naming
/// the response's fields at fault (`result`, `result.outcome`, ...).
pub fn answer_of(response: DeliverInstructionResponse) -> Result<Answer, DeliveryError> {
    match response.disposition() {
        Disposition::Accepted => Ok(Answer::Accepted),
        Disposition::Done => wire::within("result", wire::instruction_result(response.result))
            .map(Answer::Done)
            .map_err(|v| DeliveryError::fatal("INVALID_RESULT", v.to_string())),
        Disposition::Unspecified => Err(DeliveryError::fatal(
            "INVALID_RESULT",
            "disposition is unspecified",
        )),
    }
}

/// The canonical upper-case name of a status code, as gRPC spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `message` as a call to `endpoint`: its deadline, and the current span's
/// trace context.
pub(super) fn call_to<T>(endpoint: &Endpoint<'_>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(endpoint.timeout);
    inject_trace_context(&mut request);
    request
}

/// Puts the current span's W3C trace context into the call's metadata, so
/// the processor's own spans join the trace.
fn inject_trace_context<T>(request: &mut tonic::Request<T>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(
            &cx,
            &mut crate::telemetry::MetadataInjector(request.metadata_mut()),
        )
    });
}

impl Channels {
    /// Channels whose connections resolve names through `lookup`.
    pub(super) fn new(lookup: Lookup) -> Self {
        Self {
            kept: Mutex::default(),
            lookup,
        }
    }

    /// The channel to `endpoint`.
    pub(super) fn get(&self, endpoint: &Endpoint<'_>) -> Result<Channel, DeliveryError> {
        let mut channels = self.kept.lock().expect("channel cache lock");
        if let Some(kept) = channels.get_mut(endpoint.uri)
            && kept.timeout == endpoint.timeout
            && kept.files.still_current(endpoint.tls)
        {
            return Ok(kept.channel.clone());
        }
        let mut builder = tonic::transport::Endpoint::from_shared(endpoint.uri.to_string())
            .map_err(|e| DeliveryError::fatal(local::BAD_ENDPOINT, e.to_string()))?
            .connect_timeout(endpoint.timeout)
            .timeout(endpoint.timeout);
        let mut digest = Vec::new();
        if crate::domain::is_https(endpoint.uri) {
            // Files that cannot be read may be a mount in progress: the
            // delivery is retried, and escalates if they stay missing.
            let (config, files) = processor_tls(endpoint.tls)
                .map_err(|message| DeliveryError::retryable(local::TLS_FILES, message))?;
            builder = builder
                .tls_config(config)
                .map_err(|e| DeliveryError::fatal(local::BAD_TLS, e.to_string()))?;
            digest = files;
        }
        let channel = builder.connect_with_connector_lazy(connector(
            self.lookup.for_url(endpoint.uri),
            endpoint.timeout,
        ));
        channels.insert(
            endpoint.uri.to_string(),
            Kept {
                channel: channel.clone(),
                files: Freshness::new(endpoint.tls, digest),
                timeout: endpoint.timeout,
            },
        );
        Ok(channel)
    }
}

impl GrpcAdapter {
    fn client(
        &self,
        endpoint: &Endpoint<'_>,
    ) -> Result<ProcessorAdapterClient<Channel>, DeliveryError> {
        self.channels.get(endpoint).map(ProcessorAdapterClient::new)
    }
}

/// A channel to one endpoint, and the TLS files it was built from (none
/// watched for plaintext).
struct Kept {
    channel: Channel,
    files: Freshness,
    /// The timeout the channel was built with: it bounds every call on
    /// it, so a processor's changed timeout builds a new one.
    timeout: std::time::Duration,
}

#[tonic::async_trait]
impl Adapter for GrpcAdapter {
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
        let request = call_to(&endpoint, message);
        let response = self
            .client(&endpoint)?
            .deliver_instruction(request)
            .await
            .map_err(|s| classify(&s))?
            .into_inner();
        answer_of(response)
    }

    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        let message = CancelInstructionRequest {
            instruction_id: instruction.to_string(),
            reason: reason.to_string(),
        };
        let request = call_to(&endpoint, message);
        self.client(&endpoint)?
            .cancel_instruction(request)
            .await
            .map_err(|s| classify(&s))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
        ] {
            assert!(is_retryable(c), "{c:?}");
        }
        for c in [
            Code::InvalidArgument,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unimplemented,
            Code::FailedPrecondition,
        ] {
            assert!(!is_retryable(c), "{c:?}");
        }
        assert_eq!(
            classify(&tonic::Status::deadline_exceeded("x")),
            DeliveryError::retryable("DEADLINE_EXCEEDED", "x")
        );
        assert!(matches!(
            classify(&tonic::Status::invalid_argument("x")),
            DeliveryError::Fatal { .. }
        ));
    }
}
