//! The one place errors become gRPC statuses.
//!
//! Validation failures carry `google.rpc.BadRequest` field violations so a
//! client can point at each bad field. Internal failures (database, corrupt
//! rows) reach the client as an opaque `INTERNAL` with no detail, and are
//! logged here with their cause chain — never with request content.
//!
//! A refusal's violations travel in the response's trailers: the message,
//! and the details (base64, a third larger), which hold the message again.
//! gRPC's C core (the Python, C++, Ruby and PHP clients) refuses trailers
//! beyond 8 KiB now and then, and beyond 16 KiB always, reporting the
//! answer as `RESOURCE_EXHAUSTED`, which callers retry, instead of the
//! refusal. So the message lists violations up to [`MESSAGE_BUDGET`] and
//! the details up to [`DETAILS_BUDGET`], about 6 KiB of trailers in all,
//! and the message says how many were left out; a caller fixes what it is
//! told and hears of the rest on its next try.

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

/// Bytes of violations the message of a refusal lists.
const MESSAGE_BUDGET: usize = 768;

/// Bytes of violations (field paths and descriptions) the details of a
/// refusal carry.
const DETAILS_BUDGET: usize = 3 * 1024;

/// How many of the items whose sizes in bytes are `sizes` fit in
/// `budget`; the first always does.
fn fitting(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let mut used = 0;
    let mut n = 0;
    for size in sizes {
        used += size;
        if n > 0 && used > budget {
            break;
        }
        n += 1;
    }
    n
}

/// `INVALID_ARGUMENT` with as many of `v`'s violations as the trailers
/// take (see the module documentation).
fn invalid(v: &Violations) -> Status {
    let all: Vec<_> = v.iter().collect();
    let in_details = fitting(
        all.iter().map(|v| v.field.len() + v.description.len() + 8),
        DETAILS_BUDGET,
    );
    let mut details = ErrorDetails::new();
    for violation in &all[..in_details] {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    let in_message = fitting(
        all.iter().map(|v| v.field.len() + v.description.len() + 4),
        MESSAGE_BUDGET,
    );
    let mut listed = Violations::new();
    for violation in &all[..in_message] {
        listed.add(violation.field.as_str(), violation.description.as_str());
    }
    let mut message = format!("invalid argument: {listed}");
    if in_message < all.len() {
        message += &format!("; and {} more", all.len() - in_message);
    }
    if in_details < all.len() {
        message += &format!(
            " (the details list the first {in_details} of {})",
            all.len()
        );
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Invalid(v) => invalid(&v),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn many(n: usize) -> Violations {
        let mut v = Violations::new();
        for i in 0..n {
            v.add(
                format!("supported_kinds[{i}]"),
                "must be one of REQUEST_KIND_DELETION, REQUEST_KIND_ACCESS, \
                 REQUEST_KIND_CORRECTION, REQUEST_KIND_OPT_OUT_OF_SALE",
            );
        }
        v
    }

    #[test]
    fn a_few_violations_are_all_listed() {
        let status = invalid(&many(3));
        let listed = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(listed.len(), 3);
        assert_eq!(status.message().matches("supported_kinds[").count(), 3);
        assert!(!status.message().contains("more"), "{}", status.message());
    }

    #[test]
    fn many_violations_fit_in_what_every_client_takes() {
        let status = invalid(&many(10_000));
        let listed = status.get_details_bad_request().unwrap().field_violations;
        assert!(listed.len() > 10 && listed.len() < 100, "{}", listed.len());
        assert_eq!(listed[0].field, "supported_kinds[0]");
        // The trailers as sent (the message percent-encoded, the details
        // base64), under C core's 8 KiB.
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let trailers: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        assert!(trailers < 7 * 1024, "{trailers}");
        assert!(
            status.message().ends_with(&format!(
                "more (the details list the first {} of 10000)",
                listed.len()
            )),
            "{}",
            status.message()
        );
    }
}
