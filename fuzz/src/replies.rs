//! What processors answer a delivery, converted the way the dispatcher's
//! push adapters convert it: a gRPC `DeliverInstructionResponse`, the body
//! of a webhook's 2xx, an OpenDSR status, and the completion record of a
//! downstream orchestrator's closed request. A processor is another party,
//! so whatever it sends must give an [`Answer`] or fail the delivery for
//! good (`INVALID_RESULT`, an operator looks), never panic and never be
//! taken for a failure that retrying could mend.
//!
//! As in `rpc.rs`, bytes that the transport itself refuses before
//! any conversion (a protobuf message prost cannot decode: tonic fails the
//! call) are skipped. Everything else is what the adapters call, with the
//! same arguments; the HTTP status, signatures and transport errors before
//! the body are left out. `tests/wire_fuzz_regressions.rs` includes this
//! file too.

use dsr_orchestrator::dispatch::adapter::{Answer, DeliveryError};
use dsr_orchestrator::dispatch::{federation, grpc, opendsr, webhook};
use dsr_orchestrator::pb;
use prost::Message;

/// A processor's answer to a delivery, named after the protocol it comes
/// over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A gRPC processor's `DeliverInstructionResponse`.
    Grpc,
    /// The body of a webhook processor's 2xx: blank, or a
    /// `DeliveryAnswer` in JSON.
    Webhook,
    /// An OpenDSR processor's status of the request.
    OpenDsr,
    /// The completion record of a downstream orchestrator's closed
    /// request (a federated processor).
    Federation,
}

/// Every kind of answer.
pub const REPLIES: [Reply; 4] = [
    Reply::Grpc,
    Reply::Webhook,
    Reply::OpenDsr,
    Reply::Federation,
];

/// What converting an answer gives.
pub type Converted = Result<Answer, DeliveryError>;

impl Reply {
    /// Converts `bytes` as this kind of answer, as its adapter does;
    /// `None` for a protobuf message prost cannot decode.
    pub fn convert(self, bytes: &[u8]) -> Option<Converted> {
        Some(match self {
            Reply::Grpc => grpc::answer_of(decode(bytes)?),
            Reply::Webhook => webhook::answer_of_body(bytes),
            Reply::OpenDsr => opendsr::status_of(bytes).and_then(|s| opendsr::answer_of(&s)),
            Reply::Federation => federation::answer_of_record(&decode(bytes)?, None),
        })
    }

    /// An answer of this kind that a well-behaved processor sends: a
    /// result at once.
    pub fn example(self) -> Vec<u8> {
        match self {
            Reply::Grpc => pb::DeliverInstructionResponse {
                disposition: pb::deliver_instruction_response::Disposition::Done as i32,
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Denied as i32,
                    exception: pb::DeletionException::GdprLegalObligation as i32,
                    explanation: "invoices are kept for ten years".into(),
                    ..pb::InstructionResult::default()
                }),
            }
            .encode_to_vec(),
            Reply::Webhook => br#"{"disposition": "DISPOSITION_DONE",
                "result": {"outcome": "OUTCOME_COMPLETED",
                  "sub_processors": [{"name": "Archive GmbH", "country": "DE"}]}}"#
                .to_vec(),
            Reply::OpenDsr => br#"{"subject_request_id": "01890a5d-ac96-774b-bcce-b302099a8057",
                "request_status": "completed", "api_version": "2.0"}"#
                .to_vec(),
            Reply::Federation => pb::CompletionRecord {
                outcome: pb::OverallOutcome::Fulfilled as i32,
                lines: vec![pb::ProcessorLine {
                    processor_id: "platform-vendor".into(),
                    display_name: "Platform Vendor GmbH".into(),
                    country: "DE".into(),
                    state: pb::InstructionState::Completed as i32,
                    ..pb::ProcessorLine::default()
                }],
                ..pb::CompletionRecord::default()
            }
            .encode_to_vec(),
        }
    }
}

/// Panics unless `converted` is an answer or a failure for good with the
/// code `INVALID_RESULT` and a message saying what was wrong: an answer
/// that cannot be used must not be retried as if the processor were down,
/// and the operator who looks must be told why, each complaint naming its
/// field (a violation without one reads `: is required`).
pub fn check(reply: Reply, converted: &Converted) {
    match converted {
        Ok(_) => {}
        Err(DeliveryError::Fatal { code, message }) => {
            assert_eq!(code, "INVALID_RESULT", "{reply:?}: {message}");
            assert!(!message.trim().is_empty(), "{reply:?}: no message");
            let unnamed = message.starts_with(':') || message.contains(": :");
            let unnamed = unnamed || message.contains("; :");
            assert!(!unnamed, "{reply:?}: a complaint names no field: {message}");
        }
        Err(e) => panic!("{reply:?}: an unusable answer taken as retryable: {e}"),
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}
