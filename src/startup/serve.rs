//! The gRPC listener: every service, health (following the database, see
//! [`super::health`]) and reflection, the HTTP callback API on the same
//! port, behind the per-call span, authentication and the limits, over TLS
//! when configured.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::connections::Connections;
use crate::api::in_flight::InFlightLayer;
use crate::api::limits::LimitLayer;
use crate::api::opendsr::OpenDsrCallbacks;
use crate::api::{InstructionApi, ProcessorApi, ProtectionApi, RequestApi};
use crate::auth::layer::AuthLayer;
use crate::pb;
use crate::telemetry::RpcTraceLayer;
use crate::tls::server::ServerTls;

/// The transport's bounds.
pub(super) struct Transport {
    pub(super) max_message_size: usize,
    pub(super) max_concurrent_streams: u32,
    /// The open connections, counted from their handshake's end
    /// (plaintext: from their accept) until they close, the quietest
    /// closed for a newcomer beyond the bound (see `super::connections`).
    pub(super) connections: Connections,
}

/// The `dsr.v1` service implementations.
pub(super) struct Services {
    pub(super) requests: RequestApi,
    pub(super) processors: ProcessorApi,
    pub(super) instructions: InstructionApi,
    pub(super) protection: ProtectionApi,
    pub(super) opendsr: OpenDsrCallbacks,
}

/// Serves gRPC on `listener` (over `tls`, if any) until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    (in_flight, auth, limits): (InFlightLayer, AuthLayer, LimitLayer),
    transport: Transport,
    services: Services,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    use pb::data_protection_service_server::DataProtectionServiceServer;
    use pb::instruction_service_server::InstructionServiceServer;
    use pb::processor_service_server::ProcessorServiceServer;
    use pb::request_service_server::RequestServiceServer;
    let health_reporter = tonic_health::server::HealthReporter::new();
    let health_service = super::health::EndingHealth::server(&health_reporter, shutdown.clone());
    super::health::set_all(&health_reporter, tonic_health::ServingStatus::Serving).await;
    let health = tokio::spawn(super::health::follow_database(
        health_reporter,
        services.instructions.store.clone(),
        shutdown.clone(),
    ));
    // Reflection serves the contract, health, and `google.rpc`'s error
    // details, so that a generic client (grpcurl) can show the field
    // violations of an INVALID_ARGUMENT answer.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("valid descriptors");
    let reflection_v1alpha = reflection().build_v1alpha().expect("valid descriptors");
    // The HTTP callback API and the OpenDSR callbacks share the port, its
    // TLS and its layers; any other path is a gRPC method this server
    // lacks.
    let callback_api =
        crate::api::http::router(services.instructions.clone(), transport.max_message_size)
            .merge(crate::api::opendsr::router(
                services.opendsr,
                transport.max_message_size,
            ))
            .fallback(|| async {
                tonic::Status::unimplemented("").into_http::<axum::body::Body>()
            });
    let router = Server::builder()
        // HTTP/1.1 for the callback API; gRPC stays on HTTP/2.
        .accept_http1(true)
        // Detect dead peers (and half-open watch streams) within a minute.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        // One span per RPC, continuing the caller's W3C trace; outermost,
        // so everything below (health and reflection too) runs inside it.
        .layer(RpcTraceLayer)
        // How many calls at once, whoever makes them: before the
        // credentials are checked, so refused ones are bounded too.
        .layer(in_flight)
        // Who is calling, and may they: before any service sees the call.
        .layer(auth)
        // How much may they ask: by caller, so it comes after who.
        .layer(limits)
        .max_concurrent_streams(Some(transport.max_concurrent_streams))
        .add_routes(tonic::service::Routes::from(callback_api))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RequestServiceServer::new(services.requests)
                .max_decoding_message_size(transport.max_message_size)
                .max_encoding_message_size(transport.max_message_size),
        )
        .add_service(
            ProcessorServiceServer::new(services.processors)
                .max_decoding_message_size(transport.max_message_size)
                .max_encoding_message_size(transport.max_message_size),
        )
        .add_service(
            InstructionServiceServer::new(services.instructions)
                .max_decoding_message_size(transport.max_message_size)
                .max_encoding_message_size(transport.max_message_size),
        )
        .add_service(
            DataProtectionServiceServer::new(services.protection)
                .max_decoding_message_size(transport.max_message_size)
                .max_encoding_message_size(transport.max_message_size),
        );
    let connections = transport.connections;
    let served = match tls {
        // Handshakes off the accept loop; the configuration reloaded.
        Some(tls) => {
            let incoming = connections.count(tls.incoming(listener, shutdown.clone()));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
        }
        // Small messages, many calls: don't wait to batch packets. Set on
        // the incoming stream itself: the builder's `tcp_nodelay` is
        // ignored for a listener of our own, and with Nagle on, a reply
        // would wait for the client's delayed ACK (40 ms on Linux).
        None => {
            let incoming = connections.count(TcpIncoming::from(listener).with_nodelay(Some(true)));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
        }
    };
    // The follower ends with the shutdown; a server that failed first
    // leaves it running, so it is stopped here either way.
    health.abort();
    let _ = health.await;
    served
}
