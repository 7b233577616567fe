//! Every request message of `RequestService`, `ProcessorService`,
//! `InstructionService` and `DataProtectionService`, decoded from bytes and
//! converted into domain types the way its service does it, and every body
//! of the HTTP callback API ([`Body`]), parsed as JSON and converted the way
//! its route does it. The fuzz targets run these conversions on
//! whatever libFuzzer makes up; `tests/wire_fuzz_regressions.rs` includes
//! this very file (`#[path]`), so the inputs kept there go through the same
//! calls.
//!
//! The server decodes a body with prost before any handler runs and answers
//! an undecodable one `INVALID_ARGUMENT`, so such inputs are skipped
//! ([`Rpc::convert`] answers `None`). Everything after the conversion
//! (authentication, store reads and writes) is left out; where a handler
//! feeds something it read from the store into a conversion, a stand-in
//! takes its place: the stored processor an `UpdateProcessor` patch
//! applies to, and the kind and sent identities of the instruction a
//! `CompleteInstruction` answers.
//!
//! Where a service converts inline (a pull size, a list's filters and page
//! token, which reason or note it checks) the calls are repeated here: a
//! change to a handler's checks must be mirrored here. `page_size` (a range
//! check on an `i32`) is left out. The list methods' page tokens are bound
//! to the call's filters by `api::page`, whose functions are called here;
//! the calls here are the anonymous caller's.

use base64::Engine;
use chrono::DateTime;
use dsr_orchestrator::api::page::{
    bind, decode_key, encode_key, instruction_filters, request_filters, unbind,
};
use dsr_orchestrator::domain::{
    IdentityType, Jurisdiction, ProcessorId, ProcessorSpec, RequestId, RequestKind,
    SubjectIdentity, Timestamp, Violations,
};
use dsr_orchestrator::pb;
use dsr_orchestrator::store::{
    InstructionCursor, InstructionOrder, MAX_CHUNKS, RequestCursor, RequestOrder,
};
use dsr_orchestrator::wire;
use prost::Message;

/// One RPC of the four public services, named after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    SubmitRequest,
    GetRequest,
    ListRequests,
    CancelRequest,
    WatchRequest,
    GetCompletionRecord,
    ConfirmReceipt,
    ExtendDeadline,
    ListExceptions,
    VerifyAuditTrail,
    GetAccessReport,
    ExportAccessData,
    RegisterProcessor,
    GetProcessor,
    ListProcessors,
    UpdateProcessor,
    DisableProcessor,
    RotateCallbackToken,
    AcknowledgeInstruction,
    CompleteInstruction,
    PullInstructions,
    UploadDataRecords,
    ListInstructions,
    RetryInstruction,
    ResolveInstruction,
    CheckSuppression,
    RemoveSuppression,
    ResealData,
}

/// The RPCs of `RequestService`, in the order of the proto file.
pub const REQUEST_SERVICE: [Rpc; 12] = [
    Rpc::SubmitRequest,
    Rpc::GetRequest,
    Rpc::ListRequests,
    Rpc::CancelRequest,
    Rpc::WatchRequest,
    Rpc::GetCompletionRecord,
    Rpc::ConfirmReceipt,
    Rpc::ExtendDeadline,
    Rpc::ListExceptions,
    Rpc::VerifyAuditTrail,
    Rpc::GetAccessReport,
    Rpc::ExportAccessData,
];

/// The RPCs of `ProcessorService`, in the order of the proto file.
pub const PROCESSOR_SERVICE: [Rpc; 6] = [
    Rpc::RegisterProcessor,
    Rpc::GetProcessor,
    Rpc::ListProcessors,
    Rpc::UpdateProcessor,
    Rpc::DisableProcessor,
    Rpc::RotateCallbackToken,
];

/// The RPCs of `InstructionService`, in the order of the proto file.
pub const INSTRUCTION_SERVICE: [Rpc; 7] = [
    Rpc::AcknowledgeInstruction,
    Rpc::CompleteInstruction,
    Rpc::PullInstructions,
    Rpc::UploadDataRecords,
    Rpc::ListInstructions,
    Rpc::RetryInstruction,
    Rpc::ResolveInstruction,
];

/// The RPCs of `DataProtectionService`, in the order of the proto file.
pub const DATA_PROTECTION_SERVICE: [Rpc; 3] = [
    Rpc::CheckSuppression,
    Rpc::RemoveSuppression,
    Rpc::ResealData,
];

/// Every RPC of the four services.
pub fn all() -> impl Iterator<Item = Rpc> {
    REQUEST_SERVICE
        .into_iter()
        .chain(PROCESSOR_SERVICE)
        .chain(INSTRUCTION_SERVICE)
        .chain(DATA_PROTECTION_SERVICE)
}

/// How a fuzz target that covers a whole service (or every callback
/// route, or every kind of processor answer) reads its input: the first
/// byte picks the RPC (the route, the kind), the rest is its request
/// message (its body, the answer).
pub fn select<'a, T: Copy>(service: &[T], data: &'a [u8]) -> Option<(T, &'a [u8])> {
    let (&selector, message) = data.split_first()?;
    Some((service[usize::from(selector) % service.len()], message))
}

/// The selector byte [`select`] maps to `rpc` within its service.
pub fn selector(rpc: Rpc) -> u8 {
    [
        &REQUEST_SERVICE[..],
        &PROCESSOR_SERVICE,
        &INSTRUCTION_SERVICE,
        &DATA_PROTECTION_SERVICE,
    ]
    .iter()
    .find_map(|service| service.iter().position(|&r| r == rpc))
    .and_then(|i| u8::try_from(i).ok())
    .expect("every RPC is in a service")
}

/// What the service's conversions made of a request: `Ok` when the
/// handler would go on to the store, the violations it would answer
/// `INVALID_ARGUMENT` with otherwise.
pub type Outcome = Result<(), Violations>;

impl Rpc {
    /// Decodes `bytes` as this RPC's request message and converts it as its
    /// service does; `None` when prost cannot decode the bytes.
    pub fn convert(self, bytes: &[u8]) -> Option<Outcome> {
        Some(match self {
            Rpc::SubmitRequest => submit_request(decode(bytes)?),
            Rpc::GetRequest => {
                let req: pb::GetRequestRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::ListRequests => list_requests(decode(bytes)?),
            Rpc::CancelRequest => cancel_request(decode(bytes)?),
            Rpc::WatchRequest => {
                let req: pb::WatchRequestRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::GetCompletionRecord => {
                let req: pb::GetCompletionRecordRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::ConfirmReceipt => {
                let req: pb::ConfirmReceiptRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::ExtendDeadline => extend_deadline(decode(bytes)?),
            Rpc::ListExceptions => {
                let req: pb::ListExceptionsRequest = decode(bytes)?;
                wire::list_filters(&req).map(drop)
            }
            Rpc::VerifyAuditTrail => {
                let req: pb::VerifyAuditTrailRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::GetAccessReport => {
                let req: pb::GetAccessReportRequest = decode(bytes)?;
                wire::parse_request_id(&req.request_id, "request_id").map(drop)
            }
            Rpc::ExportAccessData => export_access_data(decode(bytes)?),
            Rpc::RegisterProcessor => {
                let req: pb::RegisterProcessorRequest = decode(bytes)?;
                wire::processor_spec(req.processor).map(drop)
            }
            Rpc::GetProcessor => {
                let req: pb::GetProcessorRequest = decode(bytes)?;
                wire::parse_processor_id(&req.processor_id, "processor_id").map(drop)
            }
            Rpc::ListProcessors => list_processors(decode(bytes)?),
            Rpc::UpdateProcessor => update_processor(decode(bytes)?),
            Rpc::DisableProcessor => {
                let req: pb::DisableProcessorRequest = decode(bytes)?;
                wire::parse_processor_id(&req.processor_id, "processor_id").map(drop)
            }
            Rpc::RotateCallbackToken => {
                let req: pb::RotateCallbackTokenRequest = decode(bytes)?;
                wire::parse_processor_id(&req.processor_id, "processor_id").map(drop)
            }
            Rpc::AcknowledgeInstruction => {
                let req: pb::AcknowledgeInstructionRequest = decode(bytes)?;
                wire::parse_instruction_id(&req.instruction_id, "instruction_id").map(drop)
            }
            Rpc::CompleteInstruction => complete_instruction(decode(bytes)?),
            Rpc::PullInstructions => pull_instructions(decode(bytes)?),
            Rpc::UploadDataRecords => {
                let req: pb::UploadDataRecordsRequest = decode(bytes)?;
                wire::upload_chunk(req, MAX_CHUNKS).map(drop)
            }
            Rpc::ListInstructions => list_instructions(decode(bytes)?),
            Rpc::RetryInstruction => {
                let req: pb::RetryInstructionRequest = decode(bytes)?;
                wire::parse_instruction_id(&req.instruction_id, "instruction_id").map(drop)
            }
            Rpc::ResolveInstruction => resolve_instruction(decode(bytes)?),
            Rpc::CheckSuppression => {
                let req: pb::CheckSuppressionRequest = decode(bytes)?;
                wire::checked_identities(&req.identities).map(drop)
            }
            Rpc::RemoveSuppression => {
                let req: pb::RemoveSuppressionRequest = decode(bytes)?;
                wire::suppression_removal(&req).map(drop)
            }
            Rpc::ResealData => {
                let req: pb::ResealDataRequest = decode(bytes)?;
                wire::reseal_batch(req.batch_size).map(drop)
            }
        })
    }

    /// A valid request message of this RPC, encoded: the seed of the fuzz
    /// corpus, and a check that the conversions above can succeed at all.
    pub fn example(self) -> Vec<u8> {
        match self {
            Rpc::SubmitRequest => example_submission().encode_to_vec(),
            Rpc::GetRequest => pb::GetRequestRequest {
                request_id: REQUEST_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ListRequests => with_request_token(pb::ListRequestsRequest {
                page_size: 20,
                page_token: String::new(),
                status: pb::RequestStatus::InProgress as i32,
                kind: pb::RequestKind::Delete as i32,
                jurisdiction: pb::Jurisdiction::Gdpr as i32,
                submitted_after: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                submitted_before: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 999_999_999,
                }),
                due_before: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                overdue: true,
                needs_attention: true,
                order_by: pb::RequestOrder::Newest as i32,
            })
            .encode_to_vec(),
            Rpc::CancelRequest => pb::CancelRequestRequest {
                request_id: REQUEST_ID.into(),
                reason: "the subject withdrew the request".into(),
            }
            .encode_to_vec(),
            Rpc::WatchRequest => pb::WatchRequestRequest {
                request_id: REQUEST_ID.into(),
                after_sequence: 7,
            }
            .encode_to_vec(),
            Rpc::GetCompletionRecord => pb::GetCompletionRecordRequest {
                request_id: REQUEST_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ConfirmReceipt => pb::ConfirmReceiptRequest {
                request_id: REQUEST_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ExtendDeadline => pb::ExtendDeadlineRequest {
                request_id: REQUEST_ID.into(),
                new_deadline: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                reason: "records held by an archive vendor must be recalled".into(),
            }
            .encode_to_vec(),
            Rpc::ListExceptions => pb::ListExceptionsRequest {
                jurisdiction: pb::Jurisdiction::Appi as i32,
                kind: pb::RequestKind::Object as i32,
            }
            .encode_to_vec(),
            Rpc::VerifyAuditTrail => pb::VerifyAuditTrailRequest {
                request_id: REQUEST_ID.into(),
            }
            .encode_to_vec(),
            Rpc::GetAccessReport => pb::GetAccessReportRequest {
                request_id: REQUEST_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ExportAccessData => pb::ExportAccessDataRequest {
                request_id: REQUEST_ID.into(),
                format: pb::ExportFormat::Csv as i32,
            }
            .encode_to_vec(),
            Rpc::RegisterProcessor => pb::RegisterProcessorRequest {
                processor: Some(example_processor(PROCESSOR_ID)),
            }
            .encode_to_vec(),
            Rpc::GetProcessor => pb::GetProcessorRequest {
                processor_id: PROCESSOR_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ListProcessors => pb::ListProcessorsRequest {
                page_size: 0,
                page_token: encode_key(PROCESSOR_ID),
            }
            .encode_to_vec(),
            Rpc::UpdateProcessor => pb::UpdateProcessorRequest {
                processor: Some(pb::Processor {
                    processor_id: PROCESSOR_ID.into(),
                    display_name: "Platform Vendor GmbH".into(),
                    country: "DE".into(),
                    max_reminders: Some(0),
                    retry_policy: Some(pb::RetryPolicy {
                        initial_backoff: Some(prost_types::Duration {
                            seconds: 2,
                            nanos: 0,
                        }),
                        max_backoff: Some(prost_types::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        multiplier: 3.0,
                        max_attempts: 4,
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: ["display_name", "country", "max_reminders", "retry_policy"]
                        .map(String::from)
                        .into(),
                }),
            }
            .encode_to_vec(),
            Rpc::DisableProcessor => pb::DisableProcessorRequest {
                processor_id: PROCESSOR_ID.into(),
            }
            .encode_to_vec(),
            Rpc::RotateCallbackToken => pb::RotateCallbackTokenRequest {
                processor_id: PROCESSOR_ID.into(),
            }
            .encode_to_vec(),
            Rpc::AcknowledgeInstruction => pb::AcknowledgeInstructionRequest {
                instruction_id: INSTRUCTION_ID.into(),
            }
            .encode_to_vec(),
            Rpc::CompleteInstruction => pb::CompleteInstructionRequest {
                instruction_id: INSTRUCTION_ID.into(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Completed as i32,
                    explanation: "exported the account of jane.doe@example.com".into(),
                    records: vec![pb::DataRecord {
                        category: "identifiers".into(),
                        value: "jane.doe@example.com".into(),
                        source: "signup".into(),
                        ..Default::default()
                    }],
                    sub_processors: vec![pb::SubProcessor {
                        name: "Archive GmbH".into(),
                        country: "DE".into(),
                    }],
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
            Rpc::UploadDataRecords => pb::UploadDataRecordsRequest {
                instruction_id: INSTRUCTION_ID.into(),
                chunk_index: 7,
                records: vec![pb::DataRecord {
                    category: "internet_activity".into(),
                    field: "page_view".into(),
                    value: "/account/settings".into(),
                    source: "our website".into(),
                    purpose: "analytics".into(),
                    disclosed_to: vec!["analytics providers".into()],
                    ..Default::default()
                }],
            }
            .encode_to_vec(),
            Rpc::PullInstructions => pb::PullInstructionsRequest {
                max_instructions: 25,
            }
            .encode_to_vec(),
            Rpc::ListInstructions => with_instruction_token(pb::ListInstructionsRequest {
                page_size: 100,
                page_token: String::new(),
                state: pb::InstructionState::Failed as i32,
                processor_id: PROCESSOR_ID.into(),
                request_id: REQUEST_ID.into(),
                due_before: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                overdue: true,
                needs_attention: false,
                order_by: pb::InstructionOrder::Created as i32,
            })
            .encode_to_vec(),
            Rpc::RetryInstruction => pb::RetryInstructionRequest {
                instruction_id: INSTRUCTION_ID.into(),
            }
            .encode_to_vec(),
            Rpc::ResolveInstruction => pb::ResolveInstructionRequest {
                instruction_id: INSTRUCTION_ID.into(),
                result: Some(pb::InstructionResult {
                    outcome: pb::Outcome::Denied as i32,
                    exception: pb::DeletionException::CcpaLegalObligation as i32,
                    explanation: "invoices are kept for ten years".into(),
                    ..Default::default()
                }),
                note: "confirmed with the vendor by phone".into(),
            }
            .encode_to_vec(),
            Rpc::CheckSuppression => pb::CheckSuppressionRequest {
                identities: example_identities(),
            }
            .encode_to_vec(),
            Rpc::RemoveSuppression => pb::RemoveSuppressionRequest {
                identities: example_identities(),
                reason: "the person asked to hear from us again".into(),
            }
            .encode_to_vec(),
            Rpc::ResealData => pb::ResealDataRequest { batch_size: 2_000 }.encode_to_vec(),
        }
    }
}

/// A body of the HTTP callback API, named after its route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `POST /v1/instructions/{id}/complete`.
    Complete,
    /// `POST /v1/instructions/pull`.
    Pull,
    /// `POST /v1/instructions/{id}/records`.
    Upload,
}

/// Every body of the HTTP callback API.
pub const BODIES: [Body; 3] = [Body::Complete, Body::Pull, Body::Upload];

impl Body {
    /// Parses `bytes` as this route's JSON body and converts it as the
    /// route does, then as the gRPC method it stands for does (the
    /// instruction id is the path's, a valid one here); `None` when the
    /// bytes are not the body's JSON, which the route refuses before any
    /// conversion.
    pub fn convert(self, bytes: &[u8]) -> Option<Outcome> {
        let id = || INSTRUCTION_ID.to_string();
        Some(match self {
            Body::Complete => wire::json::complete_pb(wire::json::from_body(bytes).ok()?, id())
                .and_then(complete_instruction),
            Body::Pull => {
                pull_instructions(wire::json::pull_pb(wire::json::from_body(bytes).ok()?))
            }
            Body::Upload => wire::json::upload_pb(wire::json::from_body(bytes).ok()?, id())
                .and_then(|req| wire::upload_chunk(req, MAX_CHUNKS).map(drop)),
        })
    }

    /// A valid body of this route, as the callback API's documentation
    /// shows them.
    pub fn example(self) -> Vec<u8> {
        match self {
            Body::Complete => br#"{"result": {"outcome": "OUTCOME_COMPLETED",
                "records": [{"category": "identifiers", "field": "email",
                  "value": "jane.doe@example.com", "source": "signup",
                  "purpose": "account", "collected_at": "2026-01-02T03:04:05Z",
                  "disclosed_to": ["payment processors"], "sold_or_shared": false}],
                "sub_processors": [{"name": "Archive GmbH", "country": "DE"}]}}"#
                .to_vec(),
            Body::Pull => br#"{"max_instructions": 25}"#.to_vec(),
            Body::Upload => br#"{"chunk_index": 3, "records": [{"category": "other",
                "category_label": "loyalty points", "value": "1200",
                "source": "our stores", "purpose": "rewards"}]}"#
                .to_vec(),
        }
    }
}

/// The identities of the examples: a submission's subject, or the
/// identities checked against the suppression list.
fn example_identities() -> Vec<pb::SubjectIdentity> {
    vec![
        pb::SubjectIdentity {
            r#type: pb::IdentityType::Email as i32,
            value: "jane.doe@example.com".into(),
        },
        pb::SubjectIdentity {
            r#type: pb::IdentityType::AccountId as i32,
            value: "A-1001".into(),
        },
    ]
}

/// Decodes a page token of any list method, as each of them would: a
/// `ListRequests` cursor, a `ListProcessors` key (a processor id) and a
/// `ListInstructions` key (an instruction id). Each result is `Ok` when
/// that list method would accept the token.
pub fn page_token(token: &str) -> [Outcome; 3] {
    let unknown = || Violations::one("", "is not a token this server issued");
    // The deadline and due orders' cursors, unbound, for their panics
    // only: few inputs get past the fingerprint.
    drop(RequestCursor::decode(token, RequestOrder::Deadline));
    drop(decode_key(token).and_then(|k| InstructionCursor::parse(&k, InstructionOrder::Due)));
    let requests = request_filters(&pb::ListRequestsRequest::default(), ANONYMOUS);
    let instructions = instruction_filters(&pb::ListInstructionsRequest::default());
    [
        unbind(token, &requests)
            .and_then(|c| RequestCursor::decode(&c, RequestOrder::Newest))
            .map(drop),
        decode_key(token)
            .and_then(|k| ProcessorId::parse(&k).map_err(|_| unknown()))
            .map(drop),
        unbind(token, &instructions)
            .and_then(|k| InstructionCursor::parse(&k, InstructionOrder::Created))
            .map(drop),
    ]
}

/// A token each list method issues, in the order of [`page_token`]'s
/// results: each is accepted by its own list method.
pub fn example_page_tokens() -> [String; 3] {
    [
        example_cursor(),
        encode_key(PROCESSOR_ID),
        example_instruction_token(),
    ]
}

/// Panics unless `outcome` keeps the promises of the API contract that a
/// conversion can break without panicking: a rejection carries at least one
/// violation (`Violations` is documented as non-empty), and each violation
/// names the field it is about (`google.rpc.BadRequest` field violations
/// "naming each bad field", docs/api.md).
pub fn check(rpc: impl std::fmt::Debug, outcome: &Outcome) {
    if let Err(v) = outcome {
        assert!(!v.is_empty(), "{rpc:?}: rejected without a violation");
        for violation in v.iter() {
            assert!(
                !violation.field.is_empty(),
                "{rpc:?}: a violation names no field: {violation:?}"
            );
        }
    }
}

/// A request id that parses.
pub const REQUEST_ID: &str = "6f1c2b1e-3a4d-4c5e-9f60-718293a4b5c6";
/// An instruction id that parses (a UUIDv7, as the orchestrator mints).
pub const INSTRUCTION_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
/// A processor id that parses.
pub const PROCESSOR_ID: &str = "platform-vendor";

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// The orchestrator's clock, fixed so that a kept input converts the same
/// way every time (`submitted_at` is judged against it).
pub fn now() -> Timestamp {
    DateTime::from_timestamp(1_780_000_000, 0).expect("a valid instant")
}

fn submit_request(req: pb::SubmitRequestRequest) -> Outcome {
    wire::new_request(req, now()).map(drop)
}

/// `RequestApi::extend_deadline`'s checks.
fn extend_deadline(req: pb::ExtendDeadlineRequest) -> Outcome {
    let mut v = Violations::new();
    v.take("request_id", RequestId::parse(&req.request_id));
    v.take("", wire::parse_timestamp(req.new_deadline, "new_deadline"));
    wire::check_reason(&mut v, "reason", &req.reason);
    v.finish(|| ())
}

/// `RequestApi::list`, less the page size.
fn list_requests(req: pb::ListRequestsRequest) -> Outcome {
    let mut v = Violations::new();
    v.take("status", wire::request_status(req.status));
    v.take("kind", wire::request_kind_filter(req.kind));
    v.take("jurisdiction", wire::jurisdiction_filter(req.jurisdiction));
    v.take(
        "",
        wire::parse_timestamp(req.submitted_after, "submitted_after"),
    );
    v.take(
        "",
        wire::parse_timestamp(req.submitted_before, "submitted_before"),
    );
    v.take("", wire::parse_timestamp(req.due_before, "due_before"));
    let order = v
        .take("order_by", wire::request_order(req.order_by))
        .unwrap_or_default();
    if !req.page_token.is_empty() {
        let filters = request_filters(&req, ANONYMOUS);
        v.take(
            "page_token",
            unbind(&req.page_token, &filters).and_then(|c| RequestCursor::decode(&c, order)),
        );
    }
    v.finish(|| ())
}

/// `RequestApi::cancel_request`'s checks.
fn cancel_request(req: pb::CancelRequestRequest) -> Outcome {
    let mut v = Violations::new();
    v.take("request_id", RequestId::parse(&req.request_id));
    wire::check_reason(&mut v, "reason", &req.reason);
    v.finish(|| ())
}

/// `ProcessorApi::list`, less the page size.
fn list_processors(req: pb::ListProcessorsRequest) -> Outcome {
    let mut v = Violations::new();
    if !req.page_token.is_empty() {
        v.take(
            "page_token",
            decode_key(&req.page_token).and_then(|k| {
                ProcessorId::parse(&k)
                    .map_err(|_| Violations::one("", "is not a token this server issued"))
            }),
        );
    }
    v.finish(|| ())
}

/// `ProcessorService::update_processor`: the id, then the patch applied to
/// the stored processor of that id. The store is replaced by
/// [`stored_processors`]; the outcome is that of the first, the others are
/// converted for their panics only.
fn update_processor(req: pb::UpdateProcessorRequest) -> Outcome {
    let id_text = req
        .processor
        .as_ref()
        .map(|p| p.processor_id.as_str())
        .unwrap_or("");
    let id = wire::parse_processor_id(id_text, "processor.processor_id")?;
    let mut outcomes = stored_processors(&id, req.processor.as_ref())
        .into_iter()
        .map(|current| {
            wire::apply_update(&current, req.processor.clone(), req.update_mask.clone()).map(drop)
        });
    let first = outcomes.next().expect("at least one stored processor");
    outcomes.for_each(drop);
    first
}

/// Processors the store could hold under `id`: the example processor, one
/// with the pull adapter and every optional setting, and the patch itself
/// when it is a valid registration (any valid spec can be stored).
fn stored_processors(id: &ProcessorId, patch: Option<&pb::Processor>) -> Vec<ProcessorSpec> {
    let grpc = example_processor(id.as_str());
    let pull = pb::Processor {
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Pull(pb::PullAdapter {})),
        }),
        retry_policy: Some(pb::RetryPolicy {
            initial_backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 250_000_000,
            }),
            max_backoff: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            multiplier: 1.5,
            max_attempts: 20,
        }),
        ack_timeout: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        completion_timeout: Some(prost_types::Duration {
            seconds: 86_400 * 30,
            nanos: 0,
        }),
        max_reminders: Some(0),
        max_in_flight: 1,
        ..grpc.clone()
    };
    let mut specs: Vec<ProcessorSpec> = [grpc, pull]
        .into_iter()
        .map(|p| wire::processor_spec(Some(p)).expect("the stand-in processors are valid"))
        .collect();
    specs.extend(patch.and_then(|p| wire::processor_spec(Some(p.clone())).ok()));
    specs
}

/// `ExportAccessData` before the store: the format, then the request id.
fn export_access_data(req: pb::ExportAccessDataRequest) -> Outcome {
    if pb::ExportFormat::try_from(req.format).is_err() {
        return Err(Violations::one(
            "format",
            "must be one of EXPORT_FORMAT_JSON, EXPORT_FORMAT_CSV",
        ));
    }
    wire::parse_request_id(&req.request_id, "request_id").map(drop)
}

/// `InstructionApi::complete` after the instruction was found: the result,
/// the rule that only access and portability requests return records (the
/// instruction answered is taken to be an access request's, so a result
/// with records goes on), then the redaction of the identities sent.
fn complete_instruction(req: pb::CompleteInstructionRequest) -> Outcome {
    wire::parse_instruction_id(&req.instruction_id, "instruction_id")?;
    let kind = RequestKind::Access;
    let mut v = Violations::new();
    let result = v.take("result", wire::instruction_result(req.result));
    if let Some(r) = &result
        && !r.records.is_empty()
        && !kind.returns_data()
    {
        v.add(
            "result.records",
            "only access and portability requests return data records",
        );
    }
    if let Some(why) = result
        .as_ref()
        .and_then(|r| r.misapplied_ground(Jurisdiction::Ccpa, kind))
    {
        v.add("result.exception", why);
    }
    let (Some(result), true) = (result, v.is_empty()) else {
        return Err(v);
    };
    drop(result.redacted(&sent_identities()));
    Ok(())
}

/// Identities an instruction could have been sent with: ASCII of mixed
/// case, non-ASCII, and short values that occur inside other texts.
fn sent_identities() -> Vec<SubjectIdentity> {
    [
        (IdentityType::Email, "Jane.Doe@Example.com"),
        (IdentityType::Name, "Jürgen Müller"),
        (IdentityType::Name, "İnci Iğdır"),
        (IdentityType::AccountId, "42"),
        (IdentityType::Phone, "+81 3-1234-5678"),
    ]
    .into_iter()
    .map(|(kind, value)| SubjectIdentity::new(kind, value).expect("a valid identity"))
    .collect()
}

/// `InstructionApi::pull`'s check of the batch size.
fn pull_instructions(req: pb::PullInstructionsRequest) -> Outcome {
    match req.max_instructions {
        0..=100 => Ok(()),
        _ => Err(Violations::one(
            "max_instructions",
            "must be between 1 and 100",
        )),
    }
}

/// `InstructionApi::list`, less the page size.
fn list_instructions(req: pb::ListInstructionsRequest) -> Outcome {
    let mut v = Violations::new();
    v.take("state", wire::instruction_state(req.state));
    if !req.processor_id.is_empty() {
        v.take(
            "",
            wire::parse_processor_id(&req.processor_id, "processor_id"),
        );
    }
    if !req.request_id.is_empty() {
        v.take("", wire::parse_request_id(&req.request_id, "request_id"));
    }
    let order = v
        .take("order_by", wire::instruction_order(req.order_by))
        .unwrap_or_default();
    v.take("", wire::parse_timestamp(req.due_before, "due_before"));
    if !req.page_token.is_empty() {
        let filters = instruction_filters(&req);
        v.take(
            "page_token",
            unbind(&req.page_token, &filters).and_then(|k| InstructionCursor::parse(&k, order)),
        );
    }
    v.finish(|| ())
}

/// `InstructionApi::resolve`'s checks.
fn resolve_instruction(req: pb::ResolveInstructionRequest) -> Outcome {
    let mut v = Violations::new();
    v.take(
        "",
        wire::parse_instruction_id(&req.instruction_id, "instruction_id"),
    );
    let result = v.take("result", wire::instruction_result(req.result));
    wire::check_reason(&mut v, "note", &req.note);
    // The handler then reads the instruction: a CCPA deletion's, here.
    if v.is_empty()
        && let Some(why) =
            result.and_then(|r| r.misapplied_ground(Jurisdiction::Ccpa, RequestKind::Delete))
    {
        v.add("result.exception", why);
    }
    v.finish(|| ())
}

/// The anonymous caller, as `Actor` writes it (the one a `ListRequests`
/// token is bound to here).
const ANONYMOUS: &str = "anonymous";

/// A `ListRequests` page token as the service issues it for a listing
/// with no filters: the store's cursor, bound to them.
fn example_cursor() -> String {
    bind(
        &store_cursor(),
        &request_filters(&pb::ListRequestsRequest::default(), ANONYMOUS),
    )
}

/// A `ListRequests` cursor as the store makes it, before it is bound.
fn store_cursor() -> String {
    let json =
        format!(r#"{{"submitted_at":1749999000123456,"id":"{REQUEST_ID}","order":"Newest"}}"#);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A `ListInstructions` page token as the service issues it for a listing
/// with no filters.
fn example_instruction_token() -> String {
    bind(
        INSTRUCTION_ID,
        &instruction_filters(&pb::ListInstructionsRequest::default()),
    )
}

/// `req` with a page token issued for its filters.
fn with_request_token(mut req: pb::ListRequestsRequest) -> pb::ListRequestsRequest {
    req.page_token = bind(&store_cursor(), &request_filters(&req, ANONYMOUS));
    req
}

/// `req` with a page token issued for its filters.
fn with_instruction_token(mut req: pb::ListInstructionsRequest) -> pb::ListInstructionsRequest {
    req.page_token = bind(INSTRUCTION_ID, &instruction_filters(&req));
    req
}

fn example_submission() -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        request_id: REQUEST_ID.into(),
        kind: pb::RequestKind::Delete as i32,
        jurisdiction: pb::Jurisdiction::Ccpa as i32,
        subject_identities: example_identities(),
        submitted_at: Some(prost_types::Timestamp {
            seconds: 1_779_999_000,
            nanos: 123_456_789,
        }),
        channel: "web_form".into(),
        requester: pb::Requester::Self_ as i32,
        verification: Some(pb::Verification {
            level: pb::VerificationLevel::ReasonablyHigh as i32,
            method: "email link".into(),
        }),
        processor_ids: vec!["zeta-co".into(), "alpha-co".into()],
        labels: [("ticket".to_string(), "T-1".to_string())].into(),
        access_scope: pb::AccessScope::Unspecified as i32,
        requester_evidence: String::new(),
        lookback_start: None,
    }
}

fn example_processor(id: &str) -> pb::Processor {
    pb::Processor {
        processor_id: id.into(),
        display_name: "Platform Vendor Inc.".into(),
        role: pb::ProcessorRole::Vendor as i32,
        country: "US".into(),
        supported_kinds: vec![
            pb::RequestKind::Delete as i32,
            pb::RequestKind::Access as i32,
        ],
        accepted_identity_types: vec![pb::IdentityType::Email as i32],
        adapter: Some(pb::Adapter {
            kind: Some(pb::adapter::Kind::Grpc(pb::GrpcAdapter {
                endpoint: "https://dsr.vendor.example:443".into(),
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
                tls: None,
            })),
        }),
        ..Default::default()
    }
}
