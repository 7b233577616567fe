//! The adapter seam: how an instruction physically reaches a processor.
//! The dispatcher only knows this trait; gRPC push is the first
//! implementation, and signed HTTPS webhooks, OpenDSR and federation will be
//! further ones without the dispatcher changing.

use std::time::Duration;

use crate::domain::{
    AttemptResult, InstructionResult, InstructionView, ProcessorTls, SubjectIdentity,
    redact_identities,
};

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

/// A failed delivery, classified by whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The processor is down, overloaded or slow: the same delivery may
    /// succeed later, so it is retried within the processor's budget.
    #[error("{code}: {message}")]
    Retryable {
        /// Short machine-readable code (a gRPC code name, or our own).
        code: String,
        /// Human-readable detail (never the identities we sent).
        message: String,
    },
    /// The processor will not take this instruction as sent (or its
    /// answer is unusable): retrying cannot help, an operator must look.
    #[error("{code}: {message}")]
    Fatal {
        /// Short machine-readable code (a gRPC code name, or our own).
        code: String,
        /// Human-readable detail (never the identities we sent).
        message: String,
    },
}

impl DeliveryError {
    /// A fatal error with our own `code`.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::Fatal {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The code.
    pub fn code(&self) -> &str {
        match self {
            Self::Retryable { code, .. } | Self::Fatal { code, .. } => code,
        }
    }

    /// The code and the message, taken apart.
    pub fn into_parts(self) -> (String, String) {
        match self {
            Self::Retryable { code, message } | Self::Fatal { code, message } => (code, message),
        }
    }

    /// The error with the values of `sent` removed from its message.
    pub fn redacted(self, sent: &[SubjectIdentity]) -> Self {
        match self {
            Self::Retryable { code, message } => Self::Retryable {
                code,
                message: redact_identities(&message, sent),
            },
            Self::Fatal { code, message } => Self::Fatal {
                code,
                message: redact_identities(&message, sent),
            },
        }
    }

    /// How the attempt is recorded in the history and counted.
    pub fn attempt_result(&self) -> AttemptResult {
        match self {
            Self::Retryable { .. } => AttemptResult::RetryableError,
            Self::Fatal { .. } => AttemptResult::FatalError,
        }
    }
}

/// Where and how to reach one push processor.
#[derive(Clone, Debug)]
pub struct Endpoint<'a> {
    /// URI.
    pub uri: &'a str,
    /// Deadline of one call.
    pub timeout: Duration,
    /// TLS files beyond the public roots (`https://` only).
    pub tls: Option<&'a ProcessorTls>,
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
