//! `dsr.v1.DataProtectionService`: the suppression list, checked by
//! internal services and trimmed by operators, and resealing at rest.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::auth::Caller;
use crate::clock::Clock;
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
        let identities = wire::suppression_removal(&req).map_err(ApiError::from)?;
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
        let batch = wire::reseal_batch(request.get_ref().batch_size).map_err(ApiError::from)?;
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
