//! Malformed input on the wire: bodies that are not the message they claim
//! to be are the caller's bad input (`INVALID_ARGUMENT`), never `INTERNAL`
//! (which callers retry), and nothing is stored for them.

use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::backends;
use crate::harness::app::channel;
use crate::harness::*;

backends!(undecodable_messages_are_invalid_arguments);

/// Sends and receives raw bytes, to put anything on the wire.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `method` with `body` as its message; the status of the answer.
async fn call(app: &TestApp, method: &str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel(app.addr).await);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(method).unwrap();
    match grpc.unary(tonic::Request::new(body), path, Raw).await {
        Ok(_) => Status::ok("answered"),
        Err(status) => status,
    }
}

async fn undecodable_messages_are_invalid_arguments(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let valid = deletion("olivia@example.com").encode_to_vec();
    // Field 4 (subject_identities) holding an identity whose value
    // (field 2) is not UTF-8.
    let identity = [0x10, 0x01, 0x12, 0x02, 0xff, 0xfe];
    let mut bad_utf8 = vec![0x22, identity.len() as u8];
    bad_utf8.extend(identity);
    let cases: [(&str, &str, Vec<u8>, &[&str]); 4] = [
        (
            "not protobuf",
            "/dsr.v1.RequestService/SubmitRequest",
            vec![0xff; 7],
            &[],
        ),
        (
            "truncated",
            "/dsr.v1.RequestService/SubmitRequest",
            valid[..valid.len() - 5].to_vec(),
            &["verification"],
        ),
        (
            "invalid UTF-8",
            "/dsr.v1.RequestService/SubmitRequest",
            bad_utf8,
            &["subject_identities.value"],
        ),
        (
            "not protobuf, another service",
            "/dsr.v1.ProcessorService/RegisterProcessor",
            // Field 1 (processor), a message of 255 bytes with 1 present.
            vec![0x0a, 0xff, 0x01],
            &["processor"],
        ),
    ];
    for (case, method, body, fields) in cases {
        let status = call(&app, method, body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(violations(&status), fields.to_vec(), "{case}");
        assert!(
            !status.message().contains("olivia"),
            "{case}: {}",
            status.message()
        );
    }
    assert!(all_requests(&app).await.is_empty(), "nothing was stored");
    app.stop().await;
}
