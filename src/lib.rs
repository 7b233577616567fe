//! dsr-orchestrator: carries out data-subject-rights requests (deletion,
//! access and their relatives under CCPA, GDPR and APPI) across every
//! company that holds a person's data, and keeps one record proving what was
//! done and when.
//!
//! # Layout
//!
//! Each module depends only on modules above it in this list, so
//! `domain` depends on nothing here and only [`startup`] knows them all.
//!
//! - [`domain`]: what requests, processors, instructions and records are;
//!   validated types, the pure instruction state machine, the fan-out, the
//!   retry policy. No I/O, no tonic, prost or sqlx.
//! - [`clock`]: "now", injected, so tests move time by hand.
//! - [`batches`]: the receiving end of the batching queues (intake, the
//!   recorder, the notice publisher), drained at shutdown.
//! - [`processors_file`]: the declarative YAML registry loaded at startup.
//! - [`compliance_file`]: the law's clock and the verification required,
//!   where they differ from the defaults.
//! - [`seal`]: the keys that seal personal data at rest and key its
//!   hashes.
//! - [`store`]: all orchestration state in SQL (SQLite or PostgreSQL),
//!   returning domain types: intake, claims, transitions, records, events,
//!   cancel notices to processors, notices to other replicas, throwaway
//!   databases for tests.
//! - [`wire`]: protobuf <-> domain conversion, the only place the two
//!   meet, and the codec of every service; used by the API and by the push
//!   adapters; the JSON forms of what processors exchange over HTTP. [`pb`]
//!   is the generated `dsr.v1` code it converts.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics, the per-RPC
//!   span layer.
//! - [`tls`]: the server's TLS, reloaded when its files change, and TLS
//!   towards processors.
//! - [`auth`]: who is calling (principals with roles, processors) and
//!   what they may do: the one table, and the layer that enforces it.
//! - [`dispatch`]: the claim -> deliver -> record loop, delivery slots,
//!   the recorder, where deliveries may go, and the adapter seam with its
//!   gRPC and signed-webhook implementations.
//! - [`api`]: the tonic services, the HTTP callback API (the processor
//!   methods as JSON), the error -> status mapping, and the limits on
//!   callers.
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/healthz`,
//!   `/readyz`).
//! - [`config`]: every setting, as flags and `DSR_*` variables.
//! - [`startup`]: wires everything into an [`startup::Application`] and
//!   starts and stops every background task.

pub mod admin;
pub mod api;
pub mod auth;
pub mod batches;
pub mod clock;
pub mod compliance_file;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod in_progress;
pub mod processors_file;
pub mod seal;
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
