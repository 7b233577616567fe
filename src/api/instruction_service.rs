//! `dsr.v1.InstructionService`: processors' callbacks (authenticated by
//! their callback token, and confined to their own instructions) and the
//! operators' view and controls.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::{ApiError, ApiResult};
use crate::auth::policy;
use crate::auth::{Caller, Refused};
use crate::clock::Clock;
use crate::domain::{
    Actor, AdapterConfig, InstructionState, InstructionView, ProcessorId, ResolvedBy, Violations,
    reply_due,
};
use crate::pb;
use crate::pb::instruction_service_server::InstructionService;
use crate::store::Store;
use crate::wire;

/// Why a processor may not act on an instruction.
pub(super) const NOT_YOURS: &str = "the instruction belongs to another processor";

/// Implementation of `InstructionService`.
#[derive(Clone)]
pub struct InstructionApi {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
}

impl InstructionApi {
    /// The processor whose callback token the call carries. Over gRPC the
    /// auth layer refused any other caller; over the HTTP callback API it
    /// leaves the refusal (in the same words) to here, to answer in JSON.
    pub(super) fn caller<T>(request: &Request<T>) -> ApiResult<ProcessorId> {
        Self::caller_in(request.extensions())
    }

    /// [`Self::caller`], from a request's extensions (the HTTP callback
    /// API asks before it reads the body).
    pub(super) fn caller_in(extensions: &http::Extensions) -> ApiResult<ProcessorId> {
        if let Some(Refused(status)) = extensions.get::<Refused>() {
            return Err(ApiError::Refused(status.clone()));
        }
        match extensions.get::<Caller>() {
            Some(Caller::Processor(p)) => Ok(p.clone()),
            Some(Caller::Principal(_)) => Err(ApiError::PermissionDenied(policy::PROCESSORS_ONLY)),
            Some(Caller::Anonymous) | None => {
                Err(ApiError::Unauthenticated(policy::NO_CALLBACK_TOKEN))
            }
        }
    }

    /// The instruction, if it belongs to `caller`.
    async fn owned(&self, caller: &ProcessorId, id: &str) -> ApiResult<InstructionView> {
        let id = wire::parse_instruction_id(id, "instruction_id")?;
        let view = self.store.instruction(id).await?;
        if &view.processor_id != caller {
            return Err(ApiError::PermissionDenied(NOT_YOURS));
        }
        Ok(view)
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeInstructionRequest>,
    ) -> ApiResult<pb::Instruction> {
        let caller = Self::caller(&request)?;
        let view = self
            .owned(&caller, &request.get_ref().instruction_id)
            .await?;
        let processor = self.store.processor(&caller).await?;
        if view.state == InstructionState::Cancelled {
            // The processor reads the cancellation in this answer, and its
            // notice is done; but an OpenDSR processor's status callback is
            // answered 202 and nothing more, and its DELETE still goes out.
            if !matches!(processor.spec.adapter, AdapterConfig::OpenDsr { .. }) {
                self.store.cancel_notice_done(view.id, None).await?;
            }
            return Ok(wire::instruction(&view));
        }
        let now = self.clock.now();
        let due = reply_due(now, processor.spec.reply_wait(), view.due_at);
        let view = self
            .store
            .acknowledge(view.id, due, &Actor::Processor(caller), now)
            .await?;
        Ok(wire::instruction(&view))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteInstructionRequest>,
    ) -> ApiResult<pb::Instruction> {
        let caller = Self::caller(&request)?;
        let req = request.into_inner();
        let view = self.owned(&caller, &req.instruction_id).await?;
        let mut v = Violations::new();
        let result = v.take("result", wire::instruction_result(req.result));
        if let Some(r) = &result
            && !r.records.is_empty()
            && !view.kind.returns_data()
        {
            v.add(
                "result.records",
                "only access and portability requests return data records",
            );
        }
        if let Some(why) = result
            .as_ref()
            .and_then(|r| r.misapplied_ground(view.jurisdiction, view.kind))
        {
            v.add("result.exception", why);
        }
        let (Some(result), true) = (result, v.is_empty()) else {
            return Err(v.into());
        };
        if view.state.is_terminal()
            && self
                .store
                .request(view.request_id)
                .await?
                .identities_erased_at
                .is_some()
        {
            return Err(ApiError::FailedPrecondition(format!(
                "the instruction is {} and its request finished; the request's personal data \
                 has been erased, and it takes no further answers",
                view.state.as_str()
            )));
        }
        // What the processor wrote must not repeat what we sent it.
        let sent = self.store.sent_identities(view.id).await?;
        let result = result.redacted(&sent);
        let view = self
            .store
            .resolve(
                view.id,
                &result,
                ResolvedBy::Processor,
                &Actor::Processor(caller),
                self.clock.now(),
            )
            .await?;
        Ok(wire::instruction(&view))
    }

    async fn pull(
        &self,
        request: Request<pb::PullInstructionsRequest>,
    ) -> ApiResult<pb::PullInstructionsResponse> {
        let caller = Self::caller(&request)?;
        let max = match request.get_ref().max_instructions {
            0 => 10,
            n @ 1..=100 => n as u32,
            _ => {
                return Err(
                    Violations::one("max_instructions", "must be between 1 and 100").into(),
                );
            }
        };
        let processor = self.store.processor(&caller).await?;
        if processor.spec.adapter != AdapterConfig::Pull {
            return Err(ApiError::FailedPrecondition(
                "this processor is not configured for the pull adapter".into(),
            ));
        }
        let owner = format!("pull:{caller}");
        let claimed = self
            .store
            .claim(
                &caller,
                processor.spec.max_reminders,
                processor.spec.retry_policy.max_attempts,
                max,
                &owner,
                processor.spec.ack_timeout,
                self.clock.now(),
            )
            .await?;
        let cancelled = self
            .store
            .lease_cancel_notices(
                &[(&caller, 100)],
                processor.spec.ack_timeout,
                self.clock.now(),
            )
            .await?;
        let mut instructions = Vec::with_capacity(claimed.len());
        for c in &claimed {
            let mut i = wire::instruction(&c.instruction);
            i.subject_identities = c.identities.iter().map(wire::identity_pb).collect();
            // An access instruction says what the person asks.
            if c.instruction.kind.returns_data() {
                let r = Some(self.store.request(c.instruction.request_id).await?);
                i.access_scope = wire::access_scope_of(r.as_ref());
                i.lookback_start = wire::lookback_of(r.as_ref());
            }
            instructions.push(i);
        }
        Ok(pb::PullInstructionsResponse {
            instructions,
            cancellations: cancelled
                .into_iter()
                .map(|n| pb::Cancellation {
                    instruction_id: n.instruction_id.to_string(),
                    reason: n.reason,
                })
                .collect(),
        })
    }

    async fn retry(
        &self,
        req: pb::RetryInstructionRequest,
        actor: Actor,
    ) -> ApiResult<pb::Instruction> {
        let id = wire::parse_instruction_id(&req.instruction_id, "instruction_id")?;
        let view = self.store.instruction(id).await?;
        let processor = self.store.processor(&view.processor_id).await?;
        let deliverable = processor.spec.adapter != AdapterConfig::Manual;
        let view = self
            .store
            .rearm(id, deliverable, &actor, self.clock.now())
            .await?;
        tracing::info!(instruction_id = %id, %actor, "instruction re-armed by an operator");
        Ok(wire::instruction(&view))
    }

    async fn resolve(
        &self,
        req: pb::ResolveInstructionRequest,
        actor: Actor,
    ) -> ApiResult<pb::Instruction> {
        let mut v = Violations::new();
        let id = v.take(
            "",
            wire::parse_instruction_id(&req.instruction_id, "instruction_id"),
        );
        let result = v.take("result", wire::instruction_result(req.result));
        wire::check_reason(&mut v, "note", &req.note);
        let (Some(id), Some(result), true) = (id, result, v.is_empty()) else {
            return Err(v.into());
        };
        let current = self.store.instruction(id).await?;
        if let Some(why) = result.misapplied_ground(current.jurisdiction, current.kind) {
            return Err(Violations::one("result.exception", why).into());
        }
        let view = self
            .store
            .resolve(
                id,
                &result,
                ResolvedBy::Operator(req.note),
                &actor,
                self.clock.now(),
            )
            .await?;
        tracing::info!(instruction_id = %id, state = view.state.as_str(), %actor, "instruction resolved by an operator");
        Ok(wire::instruction(&view))
    }
}

#[tonic::async_trait]
impl InstructionService for InstructionApi {
    async fn acknowledge_instruction(
        &self,
        request: Request<pb::AcknowledgeInstructionRequest>,
    ) -> Result<Response<pb::Instruction>, Status> {
        Ok(Response::new(self.acknowledge(request).await?))
    }

    async fn complete_instruction(
        &self,
        request: Request<pb::CompleteInstructionRequest>,
    ) -> Result<Response<pb::Instruction>, Status> {
        Ok(Response::new(self.complete(request).await?))
    }

    async fn pull_instructions(
        &self,
        request: Request<pb::PullInstructionsRequest>,
    ) -> Result<Response<pb::PullInstructionsResponse>, Status> {
        Ok(Response::new(self.pull(request).await?))
    }

    async fn upload_data_records(
        &self,
        request: Request<tonic::Streaming<pb::UploadDataRecordsRequest>>,
    ) -> Result<Response<pb::UploadDataRecordsResponse>, Status> {
        Ok(Response::new(self.upload(request).await?))
    }

    async fn list_instructions(
        &self,
        request: Request<pb::ListInstructionsRequest>,
    ) -> Result<Response<pb::ListInstructionsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn retry_instruction(
        &self,
        request: Request<pb::RetryInstructionRequest>,
    ) -> Result<Response<pb::Instruction>, Status> {
        let actor = Caller::of(&request).actor();
        Ok(Response::new(
            self.retry(request.into_inner(), actor).await?,
        ))
    }

    async fn resolve_instruction(
        &self,
        request: Request<pb::ResolveInstructionRequest>,
    ) -> Result<Response<pb::Instruction>, Status> {
        let actor = Caller::of(&request).actor();
        Ok(Response::new(
            self.resolve(request.into_inner(), actor).await?,
        ))
    }
}
