//! `dsr.v1.ProcessorService`: the operators' registry of processors.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::{ApiError, ApiResult};
use super::page::{decode_key, encode_key, page_size, page_token};
use crate::auth::Caller;
use crate::clock::Clock;
use crate::dispatch::destination;
use crate::dispatch::lookup::Lookup;
use crate::domain::{Processor, ProcessorId, ProcessorSpec, Violations};
use crate::pb;
use crate::pb::processor_service_server::ProcessorService;
use crate::store::{Breaker, Store};
use crate::wire;

/// How many times an `UpdateProcessor` reads, merges and writes before it
/// gives up on a processor that changes under each try (`ABORTED`).
const UPDATE_TRIES: u32 = 12;

/// The most a try that lost waits before the next, in milliseconds: a
/// random wait up to 2^n ms after the n-th loss, at most this. Without it,
/// callers updating one processor in a loop can keep landing their writes
/// inside one caller's read and write, try after try.
const MAX_UPDATE_WAIT_MS: u64 = 64;

/// Implementation of `ProcessorService`.
#[derive(Clone)]
pub struct ProcessorApi {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    /// How processors' names resolve, and whether push processors may be
    /// reached over plaintext `http://` beyond loopback (see
    /// [`destination`]).
    pub(crate) lookup: Lookup,
}

impl ProcessorApi {
    /// `p` as shown, with its circuit breaker.
    async fn shown(&self, p: &Processor) -> ApiResult<pb::Processor> {
        let breakers = self.store.breakers().await?;
        Ok(self.with_breaker(p, &breakers))
    }

    fn with_breaker(
        &self,
        p: &Processor,
        breakers: &HashMap<ProcessorId, Breaker>,
    ) -> pb::Processor {
        pb::Processor {
            circuit_breaker: wire::circuit_breaker(
                &p.spec.adapter,
                breakers.get(&p.spec.id),
                self.clock.now(),
            ),
            ..wire::processor(p)
        }
    }

    async fn list(&self, req: pb::ListProcessorsRequest) -> ApiResult<pb::ListProcessorsResponse> {
        let mut v = Violations::new();
        let size = v.take("page_size", page_size(req.page_size));
        let after = match page_token(&req.page_token) {
            None => None,
            Some(t) => v.take(
                "page_token",
                decode_key(t).and_then(|k| {
                    ProcessorId::parse(&k)
                        .map_err(|_| Violations::one("", "is not a token this server issued"))
                }),
            ),
        };
        let (Some(size), true) = (size, v.is_empty()) else {
            return Err(v.into());
        };
        let mut processors = self.store.list_processors(after.as_ref(), size + 1).await?;
        let more = processors.len() > size as usize;
        processors.truncate(size as usize);
        let next_page_token = match processors.last() {
            Some(last) if more => encode_key(last.spec.id.as_str()),
            _ => String::new(),
        };
        let breakers = self.store.breakers().await?;
        Ok(pb::ListProcessorsResponse {
            processors: processors
                .iter()
                .map(|p| self.with_breaker(p, &breakers))
                .collect(),
            next_page_token,
        })
    }
}

/// Checks where a processor's deliveries would go (see [`destination`]),
/// with paths under `processor.`.
async fn check_destination(spec: &ProcessorSpec, lookup: &Lookup) -> ApiResult<()> {
    let mut v = Violations::new();
    v.take("processor", destination::check(&spec.adapter, lookup).await);
    if v.is_empty() { Ok(()) } else { Err(v.into()) }
}

fn id_of(s: &str) -> Result<ProcessorId, ApiError> {
    wire::parse_processor_id(s, "processor_id").map_err(ApiError::from)
}

#[tonic::async_trait]
impl ProcessorService for ProcessorApi {
    async fn register_processor(
        &self,
        request: Request<pb::RegisterProcessorRequest>,
    ) -> Result<Response<pb::RegisterProcessorResponse>, Status> {
        let actor = Caller::of(&request).actor();
        let spec = wire::processor_spec(request.into_inner().processor).map_err(ApiError::from)?;
        check_destination(&spec, &self.lookup).await?;
        let registered = self
            .store
            .register_processor(&spec, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(processor_id = %spec.id, adapter = spec.adapter.kind(), %actor, "processor registered");
        Ok(Response::new(pb::RegisterProcessorResponse {
            processor: Some(wire::processor(&registered.processor)),
            callback_token: registered.callback_token,
            webhook_secret: registered.webhook_secret.unwrap_or_default(),
        }))
    }

    async fn get_processor(
        &self,
        request: Request<pb::GetProcessorRequest>,
    ) -> Result<Response<pb::Processor>, Status> {
        let id = id_of(&request.get_ref().processor_id)?;
        let p = self.store.processor(&id).await.map_err(ApiError::from)?;
        Ok(Response::new(self.shown(&p).await?))
    }

    async fn list_processors(
        &self,
        request: Request<pb::ListProcessorsRequest>,
    ) -> Result<Response<pb::ListProcessorsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }

    async fn update_processor(
        &self,
        request: Request<pb::UpdateProcessorRequest>,
    ) -> Result<Response<pb::Processor>, Status> {
        let actor = Caller::of(&request).actor();
        let req = request.into_inner();
        let id_text = req
            .processor
            .as_ref()
            .map(|p| p.processor_id.as_str())
            .unwrap_or("");
        let id =
            wire::parse_processor_id(id_text, "processor.processor_id").map_err(ApiError::from)?;
        // Read, merge the masked fields, write only if nothing changed
        // since the read; else again, on what is there now (another
        // caller's update of other fields is kept, not undone).
        for lost in 0..UPDATE_TRIES {
            if lost > 0 {
                let most = (1u64 << lost.min(6)).min(MAX_UPDATE_WAIT_MS);
                let wait = rand::random_range(0..=most);
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let current = self.store.processor(&id).await.map_err(ApiError::from)?;
            let spec = wire::apply_update(
                &current.spec,
                req.processor.clone(),
                req.update_mask.clone(),
            )
            .map_err(ApiError::from)?;
            check_destination(&spec, &self.lookup).await?;
            let written = self
                .store
                .update_processor_from(Some(current.updated_at), &spec, &actor, self.clock.now())
                .await
                .map_err(ApiError::from)?;
            if let Some(p) = written {
                tracing::info!(processor_id = %id, %actor, "processor updated");
                return Ok(Response::new(self.shown(&p).await?));
            }
        }
        Err(Status::aborted(
            "the processor changed under every try of this update: send it again",
        ))
    }

    async fn disable_processor(
        &self,
        request: Request<pb::DisableProcessorRequest>,
    ) -> Result<Response<pb::Processor>, Status> {
        let id = id_of(&request.get_ref().processor_id)?;
        let actor = Caller::of(&request).actor();
        let p = self
            .store
            .disable_processor(&id, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(processor_id = %id, %actor, "processor disabled");
        Ok(Response::new(self.shown(&p).await?))
    }

    async fn rotate_callback_token(
        &self,
        request: Request<pb::RotateCallbackTokenRequest>,
    ) -> Result<Response<pb::RotateCallbackTokenResponse>, Status> {
        let id = id_of(&request.get_ref().processor_id)?;
        let actor = Caller::of(&request).actor();
        let token = self
            .store
            .rotate_token(&id, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(processor_id = %id, %actor, "callback token rotated");
        Ok(Response::new(pb::RotateCallbackTokenResponse {
            callback_token: token,
        }))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let id = id_of(&request.get_ref().processor_id)?;
        let actor = Caller::of(&request).actor();
        let secret = self
            .store
            .rotate_webhook_secret(&id, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(processor_id = %id, %actor, "webhook secret rotated");
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook_secret: secret,
        }))
    }

    async fn close_circuit_breaker(
        &self,
        request: Request<pb::CloseCircuitBreakerRequest>,
    ) -> Result<Response<pb::Processor>, Status> {
        let id = id_of(&request.get_ref().processor_id)?;
        let actor = Caller::of(&request).actor();
        let p = self.store.processor(&id).await.map_err(ApiError::from)?;
        if !self
            .store
            .close_breaker(&id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::FailedPrecondition(format!(
                "the circuit breaker of processor {id} is not open"
            ))
            .into());
        }
        tracing::warn!(processor_id = %id, %actor, "circuit breaker closed by hand");
        Ok(Response::new(self.shown(&p).await?))
    }
}
