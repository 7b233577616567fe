//! Every RPC of every service, called by every role, without credentials,
//! with a wrong credential and with a processor's callback token, answers
//! as the one table in the code (`auth::policy::TABLE`) says: the calls it
//! allows go through (OK, with inputs prepared for each), the others are
//! PERMISSION_DENIED or UNAUTHENTICATED.

use dsr_orchestrator::auth::Role;
use dsr_orchestrator::auth::policy::{Allowed, TABLE};
use dsr_orchestrator::pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

use super::{principals_per_role, role_token};
use crate::backends;
use crate::harness::app::{Bearer, Clients, token_hash};
use crate::harness::*;

backends!(
    every_rpc_answers_every_caller_as_the_table_says,
    the_callback_api_answers_every_caller_as_its_grpc_method,
    a_principal_acts_with_the_roles_that_allow_the_method,
);

/// Who makes a call in the matrix.
#[derive(Clone, Debug)]
enum Who {
    /// The principal holding exactly this role.
    Role(Role),
    /// No credentials at all.
    Nobody,
    /// A token nobody issued.
    Wrong,
    /// A processor's callback token.
    Processor,
}

/// What the table says `who` gets for a method `allowed` to some.
fn expected(allowed: Allowed, who: &Who) -> Code {
    match (allowed, who) {
        (Allowed::Anyone, _) => Code::Ok,
        (_, Who::Nobody | Who::Wrong) => Code::Unauthenticated,
        (Allowed::Processors, Who::Processor) => Code::Ok,
        (Allowed::Processors, Who::Role(_)) => Code::PermissionDenied,
        (_, Who::Processor) => Code::PermissionDenied,
        (Allowed::AnyPrincipal, Who::Role(_)) => Code::Ok,
        (Allowed::Roles(roles), Who::Role(r)) if roles.contains(r) => Code::Ok,
        (Allowed::Roles(_), Who::Role(_)) => Code::PermissionDenied,
    }
}

/// What the server made of one call.
fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What the callers act on.
struct World {
    /// A processor the pull processor's instructions come from, its token.
    puller_token: String,
    /// A request submitted by the submitter, finished (no processor took
    /// it), so its record exists.
    finished: String,
    /// An access request of the submitter's for specific pieces, finished
    /// like `finished`, so its report and export exist.
    finished_access: String,
    /// A manual processor, so that new requests stay open.
    manual: &'static str,
}

async fn every_rpc_answers_every_caller_as_the_table_says(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |_| {}).await;
    let submitter = app.clients(Bearer::token(&role_token(Role::Submitter)));
    // Before any processor exists: it finishes at once, with its record.
    let finished = submitted(&submitter, deletion("first@example.com")).await;
    let finished_access = submitted(&submitter, pieces("second@example.com")).await;
    let puller_token = register(&app, pull_processor("puller", 60_000)).await;
    let mut manual = pull_processor("manual", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(&app, manual).await;
    let world = World {
        puller_token,
        finished,
        finished_access,
        manual: "manual",
    };

    let mut callers: Vec<Who> = Role::ALL.iter().map(|r| Who::Role(*r)).collect();
    callers.extend([Who::Nobody, Who::Wrong, Who::Processor]);
    let mut mismatches = Vec::new();
    for (path, allowed) in TABLE {
        for who in &callers {
            let got = call(&app, &world, path, who).await;
            let want = expected(*allowed, who);
            // RetryInstruction is allowed but finds nothing escalated;
            // CloseCircuitBreaker, no breaker open.
            let got = match (*path, got) {
                ("/dsr.v1.InstructionService/RetryInstruction", Code::FailedPrecondition) => {
                    Code::Ok
                }
                ("/dsr.v1.ProcessorService/CloseCircuitBreaker", Code::FailedPrecondition) => {
                    Code::Ok
                }
                (_, got) => got,
            };
            if got != want {
                mismatches.push(format!(
                    "{path} as {who:?}: {got:?}, the table says {want:?}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    app.stop().await;
}

/// The HTTP callback API (JSON for webhook processors) answers each
/// caller with the code its gRPC method does, and asks who calls before
/// it looks at the body: a principal's token is PERMISSION_DENIED, and
/// only a processor hears what is wrong with a body.
async fn the_callback_api_answers_every_caller_as_its_grpc_method(db: TestDb) {
    let app = TestApp::spawn_authenticated(&db, &principals_per_role(), |_| {}).await;
    let puller_token = register(&app, pull_processor("puller", 60_000)).await;
    let world = World {
        puller_token,
        finished: String::new(),
        finished_access: String::new(),
        manual: "manual",
    };
    // No such instruction: callers allowed get as far as NOT_FOUND.
    let id = uuid::Uuid::new_v4().to_string();
    let mut callers: Vec<Who> = Role::ALL.iter().map(|r| Who::Role(*r)).collect();
    callers.extend([Who::Nobody, Who::Wrong, Who::Processor]);
    let http = dsr_orchestrator::tls::http_client().unwrap();
    for who in &callers {
        let mut client = app.clients(bearer(&world, who)).instructions.clone();
        let acknowledge = code(
            client
                .acknowledge_instruction(pb::AcknowledgeInstructionRequest {
                    instruction_id: id.clone(),
                })
                .await,
        );
        let complete = code(
            client
                .complete_instruction(pb::CompleteInstructionRequest {
                    instruction_id: id.clone(),
                    result: Some(pb::InstructionResult {
                        outcome: pb::Outcome::Completed as i32,
                        ..Default::default()
                    }),
                })
                .await,
        );
        // A body that is not JSON: only a caller who may call hears of it.
        let malformed = match who {
            Who::Processor => Code::InvalidArgument,
            _ => acknowledge,
        };
        for (path, body, grpc) in [
            ("acknowledge", "{}", acknowledge),
            (
                "complete",
                r#"{"result": {"outcome": "OUTCOME_COMPLETED"}}"#,
                complete,
            ),
            ("complete", r#"{"result": ["#, malformed),
        ] {
            let mut call = http
                .post(format!("http://{}/v1/instructions/{id}/{path}", app.addr))
                .header("content-type", "application/json")
                .body(body);
            if let Some(header) = bearer(&world, who).header() {
                call = call.header("authorization", header);
            }
            let answer = call.send().await.unwrap();
            let status = answer.status().as_u16();
            let body: serde_json::Value = answer.json().await.unwrap();
            let want = match grpc {
                Code::InvalidArgument => (400, "INVALID_ARGUMENT"),
                Code::Unauthenticated => (401, "UNAUTHENTICATED"),
                Code::PermissionDenied => (403, "PERMISSION_DENIED"),
                Code::NotFound => (404, "NOT_FOUND"),
                other => panic!("{who:?} {path}: gRPC answered {other:?}"),
            };
            let got = (status, body["code"].as_str().unwrap());
            assert_eq!(got, want, "{who:?} {path}: {body}");
        }
    }
    app.stop().await;
}

/// The bearer of `who`.
fn bearer(world: &World, who: &Who) -> Bearer {
    match who {
        Who::Role(r) => Bearer::token(&role_token(*r)),
        Who::Nobody => Bearer::default(),
        Who::Wrong => Bearer::token("a-token-nobody-issued"),
        Who::Processor => Bearer::token(&world.puller_token),
    }
}

/// Calls the method at `path` as `who`, with inputs that make the call go
/// through when it is allowed.
async fn call(app: &TestApp, world: &World, path: &str, who: &Who) -> Code {
    let c: Clients = app.clients(bearer(world, who));
    let method = path.rsplit('/').next().unwrap();
    match method {
        "SubmitRequest" => code(
            c.requests
                .clone()
                .submit_request(deletion("m@example.com"))
                .await,
        ),
        "GetRequest" => code(
            c.requests
                .clone()
                .get_request(pb::GetRequestRequest {
                    request_id: world.finished.clone(),
                })
                .await,
        ),
        "ListRequests" => code(
            c.requests
                .clone()
                .list_requests(pb::ListRequestsRequest::default())
                .await,
        ),
        "WatchRequest" => code(
            c.requests
                .clone()
                .watch_request(pb::WatchRequestRequest {
                    request_id: world.finished.clone(),
                    after_sequence: 0,
                })
                .await,
        ),
        "GetAccessReport" => {
            first_answer(
                c.requests
                    .clone()
                    .get_access_report(pb::GetAccessReportRequest {
                        request_id: world.finished_access.clone(),
                    })
                    .await,
            )
            .await
        }
        "ExportAccessData" => {
            first_answer(
                c.requests
                    .clone()
                    .export_access_data(pb::ExportAccessDataRequest {
                        request_id: world.finished_access.clone(),
                        format: pb::ExportFormat::Json as i32,
                    })
                    .await,
            )
            .await
        }
        "GetCompletionRecord" => code(
            c.requests
                .clone()
                .get_completion_record(pb::GetCompletionRecordRequest {
                    request_id: world.finished.clone(),
                })
                .await,
        ),
        "CheckSuppression" | "RemoveSuppression" | "ResealData" => {
            let mut client =
                pb::data_protection_service_client::DataProtectionServiceClient::with_interceptor(
                    app.channel(),
                    bearer(world, who),
                );
            let identities = vec![pb::SubjectIdentity {
                r#type: pb::IdentityType::Email as i32,
                value: "matrix@example.com".into(),
            }];
            match method {
                "CheckSuppression" => code(
                    client
                        .check_suppression(pb::CheckSuppressionRequest { identities })
                        .await,
                ),
                "RemoveSuppression" => code(
                    client
                        .remove_suppression(pb::RemoveSuppressionRequest {
                            identities,
                            reason: "matrix".into(),
                        })
                        .await,
                ),
                _ => code(
                    client
                        .reseal_data(pb::ResealDataRequest { batch_size: 10 })
                        .await,
                ),
            }
        }
        "ListExceptions" => code(
            c.requests
                .clone()
                .list_exceptions(pb::ListExceptionsRequest::default())
                .await,
        ),
        "VerifyAuditTrail" => code(
            c.requests
                .clone()
                .verify_audit_trail(pb::VerifyAuditTrailRequest {
                    request_id: world.finished.clone(),
                })
                .await,
        ),
        "CancelRequest" | "ConfirmReceipt" | "ExtendDeadline" => {
            // A fresh open request of the submitter's for each try.
            let open = submit(app, to_manual(world)).await;
            let owner = app.clients(Bearer::token(&role_token(Role::Submitter)));
            let mine = owner
                .requests
                .clone()
                .submit_request(to_manual(world))
                .await
                .unwrap()
                .into_inner();
            let target = if matches!(who, Who::Role(Role::Submitter)) {
                mine.request_id
            } else {
                open.request_id
            };
            let mut requests = c.requests.clone();
            match method {
                "CancelRequest" => code(
                    requests
                        .cancel_request(pb::CancelRequestRequest {
                            request_id: target,
                            reason: "matrix".into(),
                        })
                        .await,
                ),
                "ConfirmReceipt" => code(
                    requests
                        .confirm_receipt(pb::ConfirmReceiptRequest { request_id: target })
                        .await,
                ),
                _ => code(
                    requests
                        .extend_deadline(pb::ExtendDeadlineRequest {
                            request_id: target,
                            new_deadline: None,
                            reason: "matrix".into(),
                        })
                        .await,
                ),
            }
        }
        "GetProcessor" => code(
            c.processors
                .clone()
                .get_processor(pb::GetProcessorRequest {
                    processor_id: "puller".into(),
                })
                .await,
        ),
        "ListProcessors" => code(
            c.processors
                .clone()
                .list_processors(pb::ListProcessorsRequest::default())
                .await,
        ),
        "RegisterProcessor" => {
            let id = format!("p-{}", &new_id()[..8]);
            code(
                c.processors
                    .clone()
                    .register_processor(pb::RegisterProcessorRequest {
                        processor: Some(pull_processor(&id, 60_000)),
                    })
                    .await,
            )
        }
        "UpdateProcessor" => code(
            c.processors
                .clone()
                .update_processor(pb::UpdateProcessorRequest {
                    processor: Some(pb::Processor {
                        processor_id: world.manual.into(),
                        display_name: "Manual, renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into()],
                    }),
                })
                .await,
        ),
        "DisableProcessor" => {
            let id = format!("d-{}", &new_id()[..8]);
            register(app, pull_processor(&id, 60_000)).await;
            code(
                c.processors
                    .clone()
                    .disable_processor(pb::DisableProcessorRequest { processor_id: id })
                    .await,
            )
        }
        "RotateCallbackToken" => {
            let id = format!("r-{}", &new_id()[..8]);
            register(app, pull_processor(&id, 60_000)).await;
            code(
                c.processors
                    .clone()
                    .rotate_callback_token(pb::RotateCallbackTokenRequest { processor_id: id })
                    .await,
            )
        }
        "RotateWebhookSecret" => {
            let id = format!("w-{}", &new_id()[..8]);
            register(app, webhook_processor(&id, "http://127.0.0.1:1/hook")).await;
            code(
                c.processors
                    .clone()
                    .rotate_webhook_secret(pb::RotateWebhookSecretRequest { processor_id: id })
                    .await,
            )
        }
        "CloseCircuitBreaker" => {
            // A processor without an open breaker: the answer past the
            // policy is FAILED_PRECONDITION.
            let id = format!("b-{}", &new_id()[..8]);
            register(app, pull_processor(&id, 60_000)).await;
            code(
                c.processors
                    .clone()
                    .close_circuit_breaker(pb::CloseCircuitBreakerRequest { processor_id: id })
                    .await,
            )
        }
        "PullInstructions" => code(
            c.instructions
                .clone()
                .pull_instructions(pb::PullInstructionsRequest {
                    max_instructions: 1,
                })
                .await,
        ),
        "UploadDataRecords" => {
            // An access instruction of the puller's, pulled by the puller.
            submit(
                app,
                pb::SubmitRequestRequest {
                    kind: pb::RequestKind::Access as i32,
                    access_scope: pb::AccessScope::Categories as i32,
                    ..deletion("upload@example.com")
                },
            )
            .await;
            let pulled = pull(app, &world.puller_token, 100).await;
            let access = pulled
                .iter()
                .find(|i| i.kind == pb::RequestKind::Access as i32)
                .expect("the access instruction");
            let chunk = pb::UploadDataRecordsRequest {
                instruction_id: access.instruction_id.clone(),
                chunk_index: 0,
                records: vec![pb::DataRecord {
                    category: "identifiers".into(),
                    value: "v".into(),
                    ..Default::default()
                }],
            };
            code(
                c.instructions
                    .clone()
                    .upload_data_records(tokio_stream::iter([chunk]))
                    .await,
            )
        }
        "AcknowledgeInstruction" | "CompleteInstruction" => {
            // An instruction of the puller's, pulled by the puller.
            submit(app, deletion("ack@example.com")).await;
            let pulled = pull(app, &world.puller_token, 1).await;
            let instruction_id = pulled[0].instruction_id.clone();
            if method == "AcknowledgeInstruction" {
                code(
                    c.instructions
                        .clone()
                        .acknowledge_instruction(pb::AcknowledgeInstructionRequest {
                            instruction_id,
                        })
                        .await,
                )
            } else {
                code(
                    c.instructions
                        .clone()
                        .complete_instruction(pb::CompleteInstructionRequest {
                            instruction_id,
                            result: result(pb::Outcome::Completed),
                        })
                        .await,
                )
            }
        }
        "ListInstructions" => code(
            c.instructions
                .clone()
                .list_instructions(pb::ListInstructionsRequest::default())
                .await,
        ),
        "RetryInstruction" | "ResolveInstruction" => {
            let open = submit(app, to_manual(world)).await;
            let instruction_id = open.instructions[0].instruction_id.clone();
            if method == "RetryInstruction" {
                code(
                    c.instructions
                        .clone()
                        .retry_instruction(pb::RetryInstructionRequest { instruction_id })
                        .await,
                )
            } else {
                code(
                    c.instructions
                        .clone()
                        .resolve_instruction(pb::ResolveInstructionRequest {
                            instruction_id,
                            result: result(pb::Outcome::NoData),
                            note: "matrix".into(),
                        })
                        .await,
                )
            }
        }
        "Check" | "Watch" => {
            let mut health = HealthClient::with_interceptor(app.channel(), bearer(world, who));
            let request = HealthCheckRequest {
                service: String::new(),
            };
            if method == "Check" {
                code(health.check(request).await)
            } else {
                code(health.watch(request).await)
            }
        }
        "ServerReflectionInfo" => {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let requests = tokio_stream::iter([request]);
            if path.contains("v1alpha") {
                use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
                let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(
                        tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                            String::new(),
                        ),
                    ),
                };
                let mut client =
                    ServerReflectionClient::with_interceptor(app.channel(), bearer(world, who));
                first_answer(
                    client
                        .server_reflection_info(tokio_stream::iter([request]))
                        .await,
                )
                .await
            } else {
                use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
                let mut client =
                    ServerReflectionClient::with_interceptor(app.channel(), bearer(world, who));
                first_answer(client.server_reflection_info(requests).await).await
            }
        }
        other => panic!("the matrix has no call for {other}: add one"),
    }
}

/// The code of a streaming answer: its first message, or its error.
async fn first_answer<T>(
    result: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> Code {
    match result {
        Ok(response) => match response.into_inner().message().await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        },
        Err(status) => status.code(),
    }
}

/// The id of `asked`, submitted by `clients`' principal.
async fn submitted(clients: &Clients, asked: pb::SubmitRequestRequest) -> String {
    let answer = clients.requests.clone().submit_request(asked).await;
    answer.unwrap().into_inner().request_id
}

/// An access request for `email`'s specific pieces.
fn pieces(email: &str) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        kind: pb::RequestKind::Access as i32,
        access_scope: pb::AccessScope::SpecificPieces as i32,
        ..deletion(email)
    }
}

/// A deletion that only the manual processor takes (so it stays open).
fn to_manual(world: &World) -> pb::SubmitRequestRequest {
    pb::SubmitRequestRequest {
        processor_ids: vec![world.manual.into()],
        ..deletion("open@example.com")
    }
}

/// A principal with several roles acts, in each call, with those that
/// allow the method: a submitter who is also an auditor reads another's
/// request (as an auditor) but cannot cancel it (auditors do not cancel,
/// and as a submitter it has only its own); a submitter who is also an
/// operator cancels it (as an operator) but does not get another's access
/// report (operators get none).
async fn a_principal_acts_with_the_roles_that_allow_the_method(db: TestDb) {
    let entry = |name: &str, roles: &str| {
        format!(
            "  - principal: {name}\n    sha256: {}\n    roles: [{roles}]\n",
            token_hash(&format!("token-of-{name}"))
        )
    };
    let file = format!(
        "{}{}{}",
        principals_per_role(),
        entry("reading-submitter", "submitter, auditor"),
        entry("operating-submitter", "submitter, operator"),
    );
    let app = TestApp::spawn_authenticated(&db, &file, |_| {}).await;
    let as_who = |name: &str| app.clients(Bearer::token(&format!("token-of-{name}")));
    let submitter = app.clients(Bearer::token(&role_token(Role::Submitter)));
    let access = submitted(&submitter, pieces("finished-access@example.com")).await;
    let mut manual = pull_processor("manual", 60_000);
    manual.adapter = Some(pb::Adapter {
        kind: Some(pb::adapter::Kind::Manual(pb::ManualAdapter {})),
    });
    register(&app, manual).await;
    let open = submitted(&submitter, deletion("open@example.com")).await;
    let cancel = |clients: Clients| {
        let request_id = open.clone();
        async move {
            code(
                clients
                    .requests
                    .clone()
                    .cancel_request(pb::CancelRequestRequest {
                        request_id,
                        reason: "withdrawn".into(),
                    })
                    .await,
            )
        }
    };
    let report = |clients: Clients| {
        let request_id = access.clone();
        async move {
            let asked = pb::GetAccessReportRequest { request_id };
            first_answer(clients.requests.clone().get_access_report(asked).await).await
        }
    };

    let reader = as_who("reading-submitter");
    let read = reader
        .requests
        .clone()
        .get_request(pb::GetRequestRequest {
            request_id: open.clone(),
        })
        .await;
    assert_eq!(code(read), Code::Ok, "an auditor reads every request");
    assert_eq!(cancel(reader.clone()).await, Code::NotFound);
    assert_eq!(
        report(reader).await,
        Code::Ok,
        "an auditor reads every report"
    );

    let operator = as_who("operating-submitter");
    assert_eq!(report(operator.clone()).await, Code::NotFound);
    assert_eq!(cancel(operator).await, Code::Ok, "an operator cancels");
    app.stop().await;
}
