//! The HTTP callback API's request bodies (see [`super::json`]) as the
//! protobuf requests of the gRPC methods they stand for, so that a call
//! over HTTP takes the gRPC call's path from here on. A body's own
//! violations are named by their place in it (`result.outcome`,
//! `records[2].category`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::json::{InstructionResult, UploadBody, decode_error, record_pb, result_pb};
use crate::domain::Violations;
use crate::pb;

/// Body of `POST /v1/instructions/{id}/complete`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The outcome and its details.
    #[serde(default, deserialize_with = "object::one")]
    pub result: Option<InstructionResult>,
}

/// Body of `POST /v1/instructions/pull`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    /// At most this many; default 10, 1 to 100.
    #[serde(default)]
    pub max_instructions: i32,
}

/// A request body as `T`: a blank one is `T`'s default, and one that is not
/// `T`'s JSON is refused with where it went wrong ([`decode_error`]).
pub fn from_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // A struct also reads from an array of its fields in order, which the
    // contract does not allow.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("the body must be a JSON object".into());
    }
    serde_json::from_slice(bytes).map_err(|e| decode_error(&e))
}

/// `POST /v1/instructions/{id}/complete`.
pub fn complete_pb(
    body: CompleteBody,
    instruction_id: String,
) -> Result<pb::CompleteInstructionRequest, Violations> {
    let mut v = Violations::new();
    let result = body.result.map(|r| v.take("result", result_pb(r)));
    v.finish(|| pb::CompleteInstructionRequest {
        instruction_id,
        result: result.flatten(),
    })
}

/// `POST /v1/instructions/pull`.
pub fn pull_pb(body: PullBody) -> pb::PullInstructionsRequest {
    pb::PullInstructionsRequest {
        max_instructions: body.max_instructions,
    }
}

/// `POST /v1/instructions/{id}/records`.
pub fn upload_pb(
    body: UploadBody,
    instruction_id: String,
) -> Result<pb::UploadDataRecordsRequest, Violations> {
    let mut v = Violations::new();
    let records = body
        .records
        .into_iter()
        .enumerate()
        .map(|(i, d)| record_pb(d, &format!("records[{i}]"), &mut v))
        .collect();
    v.finish(|| pb::UploadDataRecordsRequest {
        instruction_id,
        chunk_index: body.chunk_index,
        records,
    })
}

/// Serde helpers that read a struct only from a JSON object. A derived
/// struct also reads from an array of its fields in order, which the
/// contract does not allow; [`from_body`] checks the body itself, these
/// the objects inside it.
pub(super) mod object {
    use serde::de::{DeserializeOwned, Error};
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    fn read<T: DeserializeOwned, E: Error>(value: Value) -> Result<T, E> {
        if !value.is_object() {
            return Err(E::custom("expected a JSON object"));
        }
        T::deserialize(value).map_err(E::custom)
    }

    /// An optional object.
    pub fn one<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<Value>::deserialize(d)?.map(read).transpose()
    }

    /// A list of objects.
    pub fn each<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
        Vec::<Value>::deserialize(d)?
            .into_iter()
            .map(read)
            .collect()
    }
}
