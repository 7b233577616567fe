//! The adapter seam: how an instruction physically reaches a processor.
//! The dispatcher only knows this trait; gRPC push is the first
//! implementation, and signed HTTPS webhooks, OpenDSR and federation will be
//! further ones without the dispatcher changing.

use std::time::Duration;

use crate::domain::{InstructionResult, InstructionView, SubjectIdentity};

/// What is sent: the instruction and the identities its processor accepts.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    /// The instruction (its id is the processor's de-duplication key).
    pub instruction: &'a InstructionView,
    /// Identities for this processor only.
    pub identities: &'a [SubjectIdentity],
    /// True for a reminder of an overdue outcome.
    pub reminder: bool,
}

/// A processor's answer to a delivery.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Accepted; the outcome follows by callback.
    Accepted,
    /// The final result, at once.
    Done(InstructionResult),
}

/// A failed delivery, classified.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DeliveryError {
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// Short machine-readable code (a gRPC code name, or our own).
    pub code: String,
    /// Human-readable detail (never the identities we sent).
    pub message: String,
}

/// Where and how to reach one push processor.
#[derive(Clone, Debug)]
pub struct Endpoint<'a> {
    /// URI.
    pub uri: &'a str,
    /// Deadline of one call.
    pub timeout: Duration,
}

/// A way of delivering instructions to push processors.
#[tonic::async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Delivers one instruction and returns the processor's answer.
    async fn deliver(
        &self,
        endpoint: Endpoint<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, DeliveryError>;

    /// Tells the processor the request was cancelled (best effort).
    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: &InstructionView,
        reason: &str,
    ) -> Result<(), DeliveryError>;
}
