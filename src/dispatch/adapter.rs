//! The adapter seam: how an instruction physically reaches a processor.
//! The dispatcher only knows this trait; [`super::push::PushAdapters`]
//! implements it by handing each delivery to the protocol its processor
//! speaks: gRPC ([`super::grpc`]), signed HTTPS webhooks
//! ([`super::webhook`]), another orchestrator ([`super::federation`]) or
//! OpenDSR ([`super::opendsr`]).

use std::time::Duration;

use crate::domain::{
    AdapterConfig, AttemptResult, InstructionId, InstructionResult, InstructionView, ProcessorTls,
    RequestSummary, SubjectIdentity, redact_identities,
};

/// What is sent: the instruction and the identities its processor accepts.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    /// The instruction (its id is the processor's de-duplication key).
    pub instruction: &'a InstructionView,
    /// Identities for this processor only.
    pub identities: &'a [SubjectIdentity],
    /// True for a reminder of an overdue outcome (for the adapters that
    /// poll, a poll).
    pub reminder: bool,
    /// The request's facts, for access and portability instructions and
    /// for adapters that submit a request of their own (federation);
    /// `None` for the others.
    pub request: Option<&'a RequestSummary>,
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
        /// How long the processor asked us to wait before trying again
        /// (an HTTP `Retry-After`), if it said.
        after: Option<Duration>,
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

/// Codes of the failures a replica meets before it sends anything: its own
/// configuration or data is at fault (an endpoint or TLS setting that does
/// not build, files it cannot read, a secret that does not decode, an
/// instruction the protocol cannot carry), and the processor was not
/// asked. They tell nothing about the processor's health (see
/// [`DeliveryError::is_local`]).
pub mod local {
    /// The endpoint does not make a channel (or is of another kind).
    pub const BAD_ENDPOINT: &str = "BAD_ENDPOINT";
    /// The TLS settings do not make a client.
    pub const BAD_TLS: &str = "BAD_TLS";
    /// The TLS files cannot be read.
    pub const TLS_FILES: &str = "TLS_FILES";
    /// A federated processor's token file cannot be read or holds none.
    pub const TOKEN_FILE: &str = "TOKEN_FILE";
    /// A webhook's signing secret does not decode.
    pub const BAD_WEBHOOK_SECRET: &str = "BAD_WEBHOOK_SECRET";
    /// The protocol has no message for the instruction's kind.
    pub const UNSUPPORTED_KIND: &str = "UNSUPPORTED_KIND";
    /// A federated delivery came without its request's facts.
    pub const NO_REQUEST: &str = "NO_REQUEST";

    /// Every one of them.
    pub(crate) const ALL: [&str; 7] = [
        BAD_ENDPOINT,
        BAD_TLS,
        TLS_FILES,
        TOKEN_FILE,
        BAD_WEBHOOK_SECRET,
        UNSUPPORTED_KIND,
        NO_REQUEST,
    ];
}

impl DeliveryError {
    /// Whether the replica failed before it sent anything (one of the
    /// [`local`] codes; a processor's own codes are gRPC code names and
    /// `HTTP_` statuses, never these).
    pub fn is_local(&self) -> bool {
        local::ALL.contains(&self.code())
    }

    /// A retryable error with our own `code`, the processor having named
    /// no time to wait.
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self::Retryable {
            code: code.to_string(),
            message: message.into(),
            after: None,
        }
    }

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
            Self::Retryable { code, message, .. } | Self::Fatal { code, message } => {
                (code, message)
            }
        }
    }

    /// The error with the values of `sent` removed from its message.
    pub fn redacted(self, sent: &[SubjectIdentity]) -> Self {
        match self {
            Self::Retryable {
                code,
                message,
                after,
            } => Self::Retryable {
                code,
                message: redact_identities(&message, sent),
                after,
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
    /// URI (a gRPC endpoint, or a webhook's URL).
    pub uri: &'a str,
    /// Deadline of one call.
    pub timeout: Duration,
    /// TLS files beyond the public roots (`https://` only).
    pub tls: Option<&'a ProcessorTls>,
    /// The protocol the processor speaks there.
    pub protocol: Protocol<'a>,
}

/// How a push processor is spoken to.
#[derive(Clone, Copy, Debug)]
pub enum Protocol<'a> {
    /// `dsr.v1.ProcessorAdapter` over gRPC.
    Grpc,
    /// Standard Webhooks, signed with this secret (`whsec_...`).
    Webhook {
        /// The processor's signing secret.
        secret: &'a str,
    },
    /// `dsr.v1.RequestService` of another orchestrator.
    Dsr {
        /// The file holding our bearer token there.
        token_file: Option<&'a str>,
    },
    /// OpenDSR.
    OpenDsr,
}

impl<'a> Endpoint<'a> {
    /// The endpoint of a push adapter (`None` for pull and manual); a
    /// webhook is signed with `secret`.
    pub fn of(adapter: &'a AdapterConfig, secret: &'a str) -> Option<Self> {
        match adapter {
            AdapterConfig::Grpc {
                endpoint,
                timeout,
                tls,
            } => Some(Self {
                uri: endpoint,
                timeout: *timeout,
                tls: tls.as_ref(),
                protocol: Protocol::Grpc,
            }),
            AdapterConfig::Webhook { url, timeout, tls } => Some(Self {
                uri: url,
                timeout: *timeout,
                tls: tls.as_ref(),
                protocol: Protocol::Webhook { secret },
            }),
            AdapterConfig::Dsr {
                endpoint,
                timeout,
                tls,
                token_file,
                ..
            } => Some(Self {
                uri: endpoint,
                timeout: *timeout,
                tls: tls.as_ref(),
                protocol: Protocol::Dsr {
                    token_file: token_file.as_deref(),
                },
            }),
            AdapterConfig::OpenDsr {
                url, timeout, tls, ..
            } => Some(Self {
                uri: url,
                timeout: *timeout,
                tls: tls.as_ref(),
                protocol: Protocol::OpenDsr,
            }),
            AdapterConfig::Pull | AdapterConfig::Manual => None,
        }
    }
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

    /// Tells the processor the request of `instruction` was cancelled.
    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        reason: &str,
    ) -> Result<(), DeliveryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_sending_are_local() {
        for code in local::ALL {
            assert!(DeliveryError::fatal(code, "x").is_local(), "{code}");
            assert!(DeliveryError::retryable(code, "x").is_local(), "{code}");
        }
        for code in [
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "HTTP_503",
            "INVALID_RESULT",
        ] {
            assert!(!DeliveryError::retryable(code, "x").is_local(), "{code}");
        }
    }
}
