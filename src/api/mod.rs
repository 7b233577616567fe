//! The gRPC edge: tonic service implementations, the conversion between
//! protobuf messages and domain types (the only place protobuf types are
//! seen), and the mapping of errors to gRPC statuses.

pub mod convert;
mod redact;
