//! `dsr.v1.DataProtectionService`: the suppression list, checked by
//! internal services and trimmed by operators, and resealing at rest.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::auth::Caller;
use crate::clock::Clock;
use crate::domain::Violations;
use crate::pb;
use crate::pb::data_protection_service_server::DataProtectionService;
use crate::store::Store;
use crate::wire;

/// Implementation of `DataProtectionService`.
#[derive(Clone)]
pub struct ProtectionApi {
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
}

#[tonic::async_trait]
impl DataProtectionService for ProtectionApi {
    async fn check_suppression(
        &self,
        request: Request<pb::CheckSuppressionRequest>,
    ) -> Result<Response<pb::CheckSuppressionResponse>, Status> {
        let identities =
            wire::checked_identities(&request.get_ref().identities).map_err(ApiError::from)?;
        let found = self
            .store
            .suppressed(&identities)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(wire::suppression_statuses(&found)))
    }

    async fn remove_suppression(
        &self,
        request: Request<pb::RemoveSuppressionRequest>,
    ) -> Result<Response<pb::RemoveSuppressionResponse>, Status> {
        let actor = Caller::of(&request).actor();
        let req = request.into_inner();
        let mut v = Violations::new();
        let identities = v.take("", wire::checked_identities(&req.identities));
        if req.reason.trim().is_empty() || req.reason.chars().count() > 2000 {
            v.add("reason", "must be 1 to 2000 characters");
        }
        let (Some(identities), true) = (identities, v.is_empty()) else {
            return Err(ApiError::from(v).into());
        };
        let removed = self
            .store
            .remove_suppression(&identities, &req.reason, &actor, self.clock.now())
            .await
            .map_err(ApiError::from)?;
        tracing::info!(removed, %actor, "suppression list entries removed");
        Ok(Response::new(pb::RemoveSuppressionResponse {
            removed: removed as u32,
        }))
    }

    async fn reseal_data(
        &self,
        request: Request<pb::ResealDataRequest>,
    ) -> Result<Response<pb::ResealDataResponse>, Status> {
        let batch = match request.get_ref().batch_size {
            0 => 500,
            n @ 1..=10_000 => n,
            _ => {
                return Err(ApiError::from(Violations::one(
                    "batch_size",
                    "must be between 1 and 10000",
                ))
                .into());
            }
        };
        let done = self.store.reseal(batch).await.map_err(ApiError::from)?;
        tracing::info!(
            values = done.values,
            fingerprints = done.fingerprints,
            unreadable = ?done.unreadable,
            "resealed personal data at rest"
        );
        Ok(Response::new(wire::resealed(
            self.store.keys().active(),
            &done,
        )))
    }
}
