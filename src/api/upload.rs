//! `UploadDataRecords`: a processor's data records in chunks (see
//! `store::chunks`), over gRPC (a client stream) and the HTTP callback API
//! (one chunk a call).

use tokio_stream::StreamExt;
use tonic::{Request, Streaming};

use super::error::{ApiError, ApiResult};
use super::instruction_service::{InstructionApi, NOT_YOURS};
use crate::domain::{InstructionId, Violations};
use crate::pb;
use crate::store::{ChunkRefused, ChunkTotals, MAX_CHUNKS};
use crate::wire;

impl InstructionApi {
    /// Takes every chunk of the stream, in order; the first refusal ends
    /// it (the chunks taken before stay).
    pub(super) async fn upload(
        &self,
        request: Request<Streaming<pb::UploadDataRecordsRequest>>,
    ) -> ApiResult<pb::UploadDataRecordsResponse> {
        let caller = Self::caller(&request)?;
        let mut stream = request.into_inner();
        let mut last: Option<(InstructionId, ChunkTotals)> = None;
        while let Some(message) = stream.next().await {
            let message =
                message.map_err(|s| ApiError::Invalid(Violations::one("", s.message())))?;
            // Checked before the chunk is stored: a refused stream keeps
            // only the chunks before the refused one.
            if let Some((first, _)) = &last
                && wire::parse_instruction_id(&message.instruction_id, "instruction_id")
                    .is_ok_and(|id| id != *first)
            {
                return Err(Violations::one(
                    "instruction_id",
                    "every chunk of one stream is for the same instruction",
                )
                .into());
            }
            last = Some(self.take_chunk(&caller, message).await?);
        }
        let Some((id, totals)) = last else {
            return Err(Violations::one(
                "records",
                "the stream held no chunk: at least one is required",
            )
            .into());
        };
        Ok(pb::UploadDataRecordsResponse {
            instruction_id: id.to_string(),
            chunks: totals.chunks,
            records: totals.records,
        })
    }

    /// Checks and stores one chunk for `caller`.
    pub(super) async fn take_chunk(
        &self,
        caller: &crate::domain::ProcessorId,
        message: pb::UploadDataRecordsRequest,
    ) -> ApiResult<(InstructionId, ChunkTotals)> {
        let (id, index, records) = wire::upload_chunk(message, MAX_CHUNKS)?;
        match self.store.put_chunk(id, caller, index, &records).await {
            Ok(totals) => Ok((id, totals)),
            Err(ChunkRefused::NotFound(id)) => Err(ApiError::NotFound(format!("instruction {id}"))),
            Err(ChunkRefused::NotYours) => Err(ApiError::PermissionDenied(NOT_YOURS)),
            Err(ChunkRefused::NotNow(why)) => Err(ApiError::FailedPrecondition(why)),
            Err(ChunkRefused::Store(e)) => Err(e.into()),
        }
    }
}
