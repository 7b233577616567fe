//! The adapter the dispatcher is given in production: each delivery goes
//! to the protocol its processor speaks (see [`super::adapter::Protocol`]).

use super::adapter::{Adapter, Answer, Delivery, DeliveryError, Endpoint, Protocol};
use super::federation::FederationAdapter;
use super::grpc::GrpcAdapter;
use super::lookup::Lookup;
use super::opendsr::OpenDsrAdapter;
use super::webhook::WebhookAdapter;
use crate::domain::InstructionId;

/// Every push protocol behind one [`Adapter`].
pub struct PushAdapters {
    grpc: GrpcAdapter,
    webhook: WebhookAdapter,
    federation: FederationAdapter,
    opendsr: OpenDsrAdapter,
}

impl PushAdapters {
    /// Every protocol, connecting where `lookup` resolves processors'
    /// names (and keeping plaintext endpoints to loopback unless it allows
    /// plaintext); OpenDSR processors are offered status callbacks under
    /// `public_url` (without it they are polled only).
    pub fn new(public_url: Option<String>, lookup: Lookup) -> Self {
        Self {
            grpc: GrpcAdapter::new(lookup.clone()),
            webhook: WebhookAdapter::new(lookup.clone()),
            federation: FederationAdapter::new(lookup.clone()),
            opendsr: OpenDsrAdapter::new(public_url, lookup),
        }
    }
}

impl PushAdapters {
    fn of(&self, endpoint: &Endpoint<'_>) -> &dyn Adapter {
        match endpoint.protocol {
            Protocol::Grpc => &self.grpc,
            Protocol::Webhook { .. } => &self.webhook,
            Protocol::Dsr { .. } => &self.federation,
            Protocol::OpenDsr => &self.opendsr,
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
