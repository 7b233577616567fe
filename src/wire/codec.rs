//! The protobuf codec of every generated service and client: prost's,
//! except that a message that cannot be decoded is `INVALID_ARGUMENT`.
//!
//! A body that is not protobuf, a truncated one, or a string field holding
//! invalid UTF-8 is bad input, not a fault of the server. prost's codec
//! answers `INTERNAL` (as gRPC's status-code table suggests for parse
//! errors), but this contract tells callers to retry `INTERNAL`, and
//! garbage retried is garbage again. So the decoder answers
//! `INVALID_ARGUMENT`, with a `google.rpc.BadRequest` naming the field the
//! decoder stopped at when it knows one (`subject_identities.value`;
//! repeated fields are named without their index, which the decoder does
//! not report). The decoder's messages describe the encoding, never the
//! values, so no personal data reaches the answer.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// prost's codec with undecodable messages answered `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// prost's decoder, its failures answered [`invalid_message`].
#[derive(Debug)]
pub struct WireDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|status| invalid_message(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// `INVALID_ARGUMENT` for a message prost could not decode, from its error
/// text: `failed to decode Protobuf message: Inner.field: Outer.field:
/// description` (innermost field first).
pub fn invalid_message(decoder_error: &str) -> Status {
    let text = decoder_error
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(decoder_error);
    let mut fields = Vec::new();
    let mut rest = text;
    while let Some((part, after)) = rest.split_once(": ") {
        match part.split_once('.') {
            Some((message, field))
                if is_identifier(message) && is_identifier(field) && !field.is_empty() =>
            {
                fields.push(field);
                rest = after;
            }
            _ => break,
        }
    }
    fields.reverse();
    let path = fields.join(".");
    let description = format!("cannot be decoded: {rest}");
    let message = if path.is_empty() {
        format!("the message is not a valid protobuf encoding: {rest}")
    } else {
        format!("invalid argument: {path}: {description}")
    };
    if path.is_empty() {
        return Status::invalid_argument(message);
    }
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(path, description);
    Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(status: &Status) -> Vec<(String, String)> {
        status
            .get_error_details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_field_the_decoder_stopped_at_is_named() {
        let status = invalid_message(
            "failed to decode Protobuf message: SubjectIdentity.value: \
             SubmitRequestRequest.subject_identities: invalid string value: \
             data is not UTF-8 encoded",
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            violations(&status),
            [(
                "subject_identities.value".to_string(),
                "cannot be decoded: invalid string value: data is not UTF-8 encoded".to_string()
            )]
        );
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_invalid_too() {
        let status =
            invalid_message("failed to decode Protobuf message: invalid wire type value: 7");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the message is not a valid protobuf encoding: invalid wire type value: 7"
        );
        assert!(violations(&status).is_empty());
    }
}
