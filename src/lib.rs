//! dsr-orchestrator: carries out data-subject-rights requests (deletion,
//! access and their relatives under CCPA, GDPR and APPI) across every
//! company that holds a person's data, and keeps one record proving what was
//! done and when.
//!
//! # Layout
//!
//! - [`domain`]: what requests, processors, instructions and records are;
//!   validated types and the pure instruction state machine. Depends on
//!   nothing else here.
//! - [`store`]: all orchestration state in SQL (SQLite or PostgreSQL),
//!   returning domain types. Intake, claims, transitions, records.
//! - [`dispatch`]: the claim -> deliver -> record loop and the adapter
//!   seam (gRPC push today).
//! - [`api`]: the tonic services, protobuf <-> domain conversion, and the
//!   error -> status mapping.
//! - [`startup`]: wires everything into an [`startup::Application`];
//!   [`config`], [`telemetry`] and [`clock`] support it.
//! - [`processors_file`]: the declarative YAML registry loaded at startup.

pub mod admin;
pub mod api;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod domain;
pub mod processors_file;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod wire;

/// Generated protobuf and gRPC code of `dsr.v1`.
#[allow(missing_docs)]
pub mod pb {
    tonic::include_proto!("dsr.v1");
    /// Encoded descriptors of the `dsr.v1` files, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dsr_descriptor");
}
