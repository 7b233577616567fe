//! dsr-orchestrator: carries out data-subject-rights requests (deletion,
//! access and their relatives under CCPA, GDPR and APPI) across every
//! company that holds a person's data, and keeps one record proving what was
//! done and when.
//!
//! # Layout
//!
//! Dependencies point down this list: `domain` depends on nothing here,
//! `store` on `domain`, `dispatch` on `domain`, `store` and `wire`, `api`
//! on those, and only [`startup`] knows them all.
//!
//! - [`domain`]: what requests, processors, instructions and records are;
//!   validated types, the pure instruction state machine, the fan-out, the
//!   retry policy. No I/O, no tonic, prost or sqlx.
//! - [`store`]: all orchestration state in SQL (SQLite or PostgreSQL),
//!   returning domain types: intake, claims, transitions, records, events,
//!   notices to other replicas, throwaway databases for tests.
//! - [`wire`]: protobuf <-> domain conversion, the only place the two
//!   meet; used by the API and by the gRPC push adapter.
//! - [`dispatch`]: the claim -> deliver -> record loop, delivery slots,
//!   the recorder, and the adapter seam with its gRPC implementation.
//! - [`api`]: the tonic services and the error -> status mapping.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, the per-RPC
//!   span layer.
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/healthz`,
//!   `/readyz`).
//! - [`config`]: every setting, as flags and `DSR_*` variables.
//! - [`processors_file`]: the declarative YAML registry loaded at startup.
//! - [`clock`]: "now", injected, so tests move time by hand.
//! - [`batches`]: the receiving end of the batching queues (intake, the
//!   recorder, the notice publisher), drained at shutdown.
//! - [`startup`]: wires everything into an [`startup::Application`] and
//!   starts and stops every background task.
//! - [`pb`]: the generated `dsr.v1` code.

pub mod admin;
pub mod api;
pub mod auth;
pub mod batches;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod processors_file;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod wire;

/// Generated protobuf and gRPC code of `dsr.v1`.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("dsr.v1");
    /// Encoded descriptors of the `dsr.v1` files, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dsr_descriptor");
}
