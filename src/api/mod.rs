//! The gRPC edge: tonic service implementations, the conversion between
//! protobuf messages and domain types (the only place protobuf types are
//! seen), and the mapping of errors to gRPC statuses.

pub mod convert;
pub mod error;
mod instruction_service;
mod page;
mod processor_service;
mod redact;
mod request_service;

pub use instruction_service::InstructionApi;
pub use processor_service::ProcessorApi;
pub use request_service::RequestApi;
