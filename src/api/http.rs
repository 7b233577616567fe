//! The HTTP callback API: the processor methods of `InstructionService`
//! (acknowledge, complete, pull) as JSON over HTTP, for processors that
//! speak webhooks rather than gRPC. `docs/openapi.yaml` describes it.
//!
//! It is served on the gRPC port, behind the same layers (the per-call
//! span, authentication with the same callback tokens, the limits), and
//! each call is handed to the gRPC service itself: the JSON body becomes
//! the protobuf request ([`crate::wire::json`]), so validation, errors and
//! idempotency are exactly those of the gRPC methods. A gRPC error becomes
//! the HTTP status Google's API design maps it to, with a JSON body naming
//! the gRPC code, the message and the field violations. A body must be a
//! JSON object (or empty where the method takes none) sent as
//! `application/json` (or without a type); one longer than
//! `--max-message-size` is `OUT_OF_RANGE`, as over gRPC; any other path
//! under `/v1/` is `NOT_FOUND`, and another method than POST 405.

use axum::Router;
use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use tonic::Code;
use tonic_types::StatusExt;

use super::error::ApiError;
use super::instruction_service::InstructionApi;
use crate::pb;
use crate::pb::instruction_service_server::InstructionService;
use crate::wire::json;

/// Where the API's paths begin: any other path under it is `NOT_FOUND`,
/// and refusals under it (the limits') are answered in JSON.
pub const PREFIX: &str = "/v1/";

/// `AcknowledgeInstruction`.
pub const ACKNOWLEDGE: &str = "/v1/instructions/{instruction_id}/acknowledge";
/// `CompleteInstruction`.
pub const COMPLETE: &str = "/v1/instructions/{instruction_id}/complete";
/// `PullInstructions`.
pub const PULL: &str = "/v1/instructions/pull";
/// `UploadDataRecords`, one chunk a call.
pub const RECORDS: &str = "/v1/instructions/{instruction_id}/records";

/// The callback API's routes, over `api`; bodies longer than `max_body`
/// bytes are refused.
pub fn router(api: InstructionApi, max_body: usize) -> Router {
    Router::new()
        .route(ACKNOWLEDGE, post(acknowledge).fallback(only_post))
        .route(COMPLETE, post(complete).fallback(only_post))
        .route(PULL, post(pull).fallback(only_post))
        .route(RECORDS, post(upload).fallback(only_post))
        .route(&format!("{PREFIX}{{*rest}}"), any(no_such_path))
        .with_state(Shared { api, max_body })
}

#[derive(Clone)]
struct Shared {
    api: InstructionApi,
    max_body: usize,
}

/// The call as the gRPC service takes it: the message, with the
/// request's headers as metadata and its extensions (the caller the auth
/// layer found).
async fn call<T>(
    shared: &Shared,
    request: Request,
    parse: impl FnOnce(Bytes) -> Result<T, tonic::Status>,
) -> Result<tonic::Request<T>, tonic::Status> {
    let (parts, body) = request.into_parts();
    // Who calls first, as over gRPC: a caller who may not call learns
    // nothing of the body's faults, and the body is not read for it.
    InstructionApi::caller_in(&parts.extensions)?;
    let bytes = axum::body::to_bytes(body, shared.max_body)
        .await
        .map_err(|_| {
            tonic::Status::out_of_range(format!(
                "the body is longer than {} bytes, or could not be read",
                shared.max_body
            ))
        })?;
    if !bytes.iter().all(u8::is_ascii_whitespace) && !is_json(&parts.headers) {
        return Err(tonic::Status::invalid_argument(
            "the body must be sent as `content-type: application/json`",
        ));
    }
    let message = parse(bytes)?;
    Ok(tonic::Request::from_http(http::Request::from_parts(
        parts, message,
    )))
}

/// Whether the request's content type, if it names one, is JSON.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return true;
    };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("");
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// Another method than POST on a path of the API: 405, in JSON.
async fn only_post() -> Response {
    post_only("the HTTP callback API takes POST only")
}

/// 405 for a path that takes POST only, in JSON, saying `why`.
pub(super) fn post_only(why: &'static str) -> Response {
    let mut response = error_response(&tonic::Status::unimplemented(why));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
    response
}

/// A path under `/v1/` the API does not have.
async fn no_such_path() -> Response {
    error_response(&tonic::Status::not_found(
        "no such path in the HTTP callback API (see docs/openapi.yaml)",
    ))
}

/// A path's one parameter, as a handler takes it. One that does not
/// decode (not UTF-8 once percent-decoded) stands as U+FFFD, which no id
/// matches: the call is refused as its gRPC method refuses a malformed id,
/// in JSON and after its caller is checked, where axum's own rejection
/// would be plain text before it. A route without the parameter is a bug
/// of ours: axum's 500.
pub(super) struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(p)) => Ok(Self(p)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Ok(Self(char::REPLACEMENT_CHARACTER.to_string()))
            }
            Err(bug) => Err(bug.into_response()),
        }
    }
}

/// The JSON body as `T`; an empty body is `T`'s default.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, tonic::Status> {
    json::from_body(bytes).map_err(tonic::Status::invalid_argument)
}

async fn acknowledge(
    State(shared): State<Shared>,
    PathParam(instruction_id): PathParam,
    request: Request,
) -> Response {
    let answer = async {
        let request = call(&shared, request, |_| {
            Ok(pb::AcknowledgeInstructionRequest { instruction_id })
        })
        .await?;
        shared.api.acknowledge_instruction(request).await
    };
    respond(answer.await.map(|r| json::instruction(r.get_ref())))
}

async fn complete(
    State(shared): State<Shared>,
    PathParam(instruction_id): PathParam,
    request: Request,
) -> Response {
    let answer = async {
        let request = call(&shared, request, |bytes| {
            json::complete_pb(body(&bytes)?, instruction_id).map_err(|v| ApiError::from(v).into())
        })
        .await?;
        shared.api.complete_instruction(request).await
    };
    respond(answer.await.map(|r| json::instruction(r.get_ref())))
}

async fn pull(State(shared): State<Shared>, request: Request) -> Response {
    let answer = async {
        let request = call(&shared, request, |bytes| Ok(json::pull_pb(body(&bytes)?))).await?;
        shared.api.pull_instructions(request).await
    };
    respond(answer.await.map(|r| {
        let r = r.get_ref();
        json::PullAnswer {
            instructions: r.instructions.iter().map(json::instruction).collect(),
            cancellations: r
                .cancellations
                .iter()
                .map(|c| json::Cancellation {
                    instruction_id: c.instruction_id.clone(),
                    reason: c.reason.clone(),
                })
                .collect(),
        }
    }))
}

async fn upload(
    State(shared): State<Shared>,
    PathParam(instruction_id): PathParam,
    request: Request,
) -> Response {
    let answer = async {
        let request = call(&shared, request, |bytes| {
            json::upload_pb(body(&bytes)?, instruction_id).map_err(|v| ApiError::from(v).into())
        })
        .await?;
        let caller = InstructionApi::caller(&request)?;
        let (id, totals) = shared.api.take_chunk(&caller, request.into_inner()).await?;
        Ok::<_, tonic::Status>(json::UploadAnswer {
            instruction_id: id.to_string(),
            chunks: totals.chunks,
            records: totals.records,
        })
    };
    respond(answer.await)
}

/// 200 with the JSON answer, or the error's status and JSON body.
fn respond<T: serde::Serialize>(answer: Result<T, tonic::Status>) -> Response {
    match answer {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(status) => error_response(&status),
    }
}

/// The HTTP form of a gRPC error.
pub fn error_response(status: &tonic::Status) -> Response {
    let field_violations = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|f| json::FieldViolation {
                    field: f.field,
                    description: f.description,
                })
                .collect()
        })
        .unwrap_or_default();
    let body = json::Error {
        code: crate::dispatch::grpc::code_name(status.code()).to_string(),
        message: status.message().to_string(),
        field_violations,
    };
    let mut response = (http_status(status.code()), axum::Json(body)).into_response();
    if status.code() == Code::Unauthenticated {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    let retry_after = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

/// The HTTP status of a gRPC code (as `google.rpc.Code` documents it).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a status"),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
