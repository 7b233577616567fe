//! The adapter the dispatcher is given in production: each delivery goes
//! to the protocol its processor speaks (see [`super::adapter::Protocol`]).

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, Protocol};
use super::grpc::GrpcAdapter;
use super::webhook::WebhookAdapter;
use crate::domain::InstructionId;

/// gRPC and webhook delivery behind one [`Adapter`].
#[derive(Default)]
pub struct PushAdapters {
    grpc: GrpcAdapter,
    webhook: WebhookAdapter,
}

impl PushAdapters {
    fn of(&self, endpoint: &Endpoint<'_>) -> &dyn Adapter {
        match endpoint.protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Webhook { .. } => &self.webhook,
        }
    }
}

#[tonic::async_trait]
impl Adapter for PushAdapters {
    async fn deliver(
        &self,
        endpoint: Endpoint<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, DeliveryError> {
        self.of(&endpoint).deliver(endpoint, delivery).await
    }

    async fn cancel(
        &self,
        endpoint: Endpoint<'_>,
        instruction: InstructionId,
        reason: &str,
    ) -> Result<(), DeliveryError> {
        self.of(&endpoint)
            .cancel(endpoint, instruction, reason)
            .await
    }
}
