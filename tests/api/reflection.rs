//! Server reflection: what a generic client (grpcurl) learns from the
//! server itself, the error details included.

use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use crate::backends;
use crate::harness::app::channel;
use crate::harness::*;

backends!(reflection_serves_the_contract_and_the_error_details);

/// Asks the server for the file defining `symbol`.
async fn file_containing(app: &TestApp, symbol: &str) -> ServerReflectionResponse {
    let mut client = ServerReflectionClient::new(channel(app.addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    answers
        .message()
        .await
        .expect("a response")
        .expect("one message")
}

/// The services, and `google.rpc.BadRequest`, in which every
/// INVALID_ARGUMENT answer names its bad fields: without it grpcurl
/// cannot show them ("google.rpc.BadRequest is not recognized").
async fn reflection_serves_the_contract_and_the_error_details(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    for symbol in [
        "dsr.v1.RequestService",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
    ] {
        match file_containing(&app, symbol).await.message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                assert!(!files.file_descriptor_proto.is_empty(), "{symbol}");
            }
            other => panic!("{symbol}: {other:?}"),
        }
    }
    app.stop().await;
}
