//! The gRPC edge: tonic service implementations and the mapping of errors
//! to gRPC statuses. Messages become domain types through [`crate::wire`]
//! before anything else sees them.

mod access_report;
pub mod error;
mod export;
pub mod http;
pub mod in_flight;
mod instruction_list;
mod instruction_service;
pub mod limits;
pub mod opendsr;
pub mod page;
mod processor_service;
mod protection_service;
mod request_service;
mod upload;
mod watch;
pub mod watch_limits;

pub use instruction_service::InstructionApi;
pub use processor_service::ProcessorApi;
pub use protection_service::ProtectionApi;
pub use request_service::RequestApi;
