//! The one place errors become gRPC statuses.
//!
//! Validation failures carry `google.rpc.BadRequest` field violations so a
//! client can point at each bad field. Internal failures (database, corrupt
//! rows) reach the client as an opaque `INTERNAL` with no detail, and are
//! logged here with their cause chain — never with request content.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violations;
use crate::store::StoreError;

/// Errors of the API layer, each documenting the status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `INVALID_ARGUMENT` with field violations.
    #[error("invalid argument: {0}")]
    Invalid(Violations),
    /// `NOT_FOUND`: what was not found, e.g. `request 6f1c2b1e-...`.
    #[error("{0} not found")]
    NotFound(String),
    /// `ALREADY_EXISTS`.
    #[error("{0}")]
    AlreadyExists(String),
    /// `FAILED_PRECONDITION`.
    #[error("{0}")]
    FailedPrecondition(String),
    /// `UNAUTHENTICATED`: missing or unknown callback token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// `PERMISSION_DENIED`: a processor touching another's instruction.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// `UNAVAILABLE`: the database is unreachable or a transaction lost a
    /// race (see [`StoreError::is_transient`]); retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    /// `INTERNAL`: a bug or corrupt data; details only in the log.
    #[error("internal error")]
    Internal(#[source] StoreError),
    /// The authentication layer's refusal of the call's credential, as it
    /// made it (see [`crate::auth::Refused`]).
    #[error("{}", .0.message())]
    Refused(Status),
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::Invalid(v)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            StoreError::FailedPrecondition(m) | StoreError::Sealed(m) => {
                ApiError::FailedPrecondition(m)
            }
            StoreError::Invalid(v) => ApiError::Invalid(v),
            e if e.is_transient() => ApiError::Unavailable(e),
            other => ApiError::Internal(other),
        }
    }
}

/// Logs an error with its whole cause chain.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    chain.join(": ")
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(v) => {
                let mut details = ErrorDetails::new();
                for violation in v.iter() {
                    details.add_bad_request_violation(&violation.field, &violation.description);
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid argument: {v}"),
                    details,
                )
            }
            ApiError::NotFound(what) => Status::not_found(format!("{what} not found")),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::Refused(status) => status,
            ApiError::Unavailable(ref source) => {
                // Expected while the database is away: a warning, not an
                // error, for each call.
                tracing::warn!(error = %chain(source), "request failed; the caller may retry");
                Status::unavailable(match source {
                    StoreError::Unanswered(_) | StoreError::Stopped => source.to_string(),
                    _ => "the database is unavailable; retry later".to_string(),
                })
            }
            ApiError::Internal(ref source) => {
                tracing::error!(error = %chain(source), "request failed");
                Status::internal("internal error")
            }
        }
    }
}

/// Result of an API handler body.
pub type ApiResult<T> = Result<T, ApiError>;
