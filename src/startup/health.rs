//! `grpc.health.v1.Health` follows the database, as `/readyz` does: a
//! replica whose database does not answer serves nothing but refusals, so
//! a load balancer or client that routes by gRPC health should send its
//! calls elsewhere. Every [`CHECK_EVERY`] the follower asks whether the
//! database answers ([`Store::answers`], as `/readyz` asks) and on a
//! change sets the server and each `dsr.v1` service NOT_SERVING or
//! SERVING again.
//!
//! A `Watch` stream ends at shutdown with a last NOT_SERVING
//! ([`EndingHealth`]). The server's graceful shutdown waits for every open
//! stream, and a health watch otherwise ends only when its client hangs
//! up: one watching client would hold a stopping replica until it is
//! killed.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::api::{InstructionApi, ProcessorApi, ProtectionApi, RequestApi};
use crate::pb;
use crate::store::Store;

/// How often the database is asked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The names health answers for: the server as a whole (`""`) and each
/// `dsr.v1` service.
const NAMES: [&str; 5] = [
    "",
    <pb::request_service_server::RequestServiceServer<RequestApi> as NamedService>::NAME,
    <pb::processor_service_server::ProcessorServiceServer<ProcessorApi> as NamedService>::NAME,
    <pb::instruction_service_server::InstructionServiceServer<InstructionApi> as NamedService>::NAME,
    <pb::data_protection_service_server::DataProtectionServiceServer<ProtectionApi> as NamedService>::NAME,
];

/// Sets every name in [`NAMES`] to `status`.
pub(super) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for name in NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Follows the database until `stop` (see the module documentation).
pub(super) async fn follow_database(
    reporter: HealthReporter,
    store: Store,
    stop: CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let answers = store.answers().await;
        if answers == serving {
            continue;
        }
        serving = answers;
        if serving {
            tracing::info!("the database answers again; health is SERVING");
            set_all(&reporter, ServingStatus::Serving).await;
        } else {
            tracing::warn!("the database does not answer; health is NOT_SERVING until it does");
            set_all(&reporter, ServingStatus::NotServing).await;
        }
    }
}

/// The health service whose `Watch` streams end at `stop`, with a last
/// NOT_SERVING.
pub(super) struct EndingHealth {
    inner: HealthService,
    stop: CancellationToken,
}

impl EndingHealth {
    /// The service answering from `reporter`'s statuses.
    pub(super) fn server(reporter: &HealthReporter, stop: CancellationToken) -> HealthServer<Self> {
        HealthServer::new(Self {
            inner: HealthService::from_health_reporter(reporter.clone()),
            stop,
        })
    }
}

#[tonic::async_trait]
impl Health for EndingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let stop = self.stop.clone().cancelled_owned();
        let last = futures::stream::once(async {
            Ok(HealthCheckResponse {
                status: tonic_health::pb::health_check_response::ServingStatus::NotServing as i32,
            })
        });
        Ok(Response::new(Box::pin(
            statuses.take_until(stop).chain(last),
        )))
    }
}
