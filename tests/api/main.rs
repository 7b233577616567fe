//! Integration tests: the real gRPC server on a free port, a real database
//! per test, and real in-process processor servers, driven through the
//! generated clients. Modules are named by capability.

mod harness;

mod crash;
mod delivery;
mod intake;
mod limits;
mod observability;
mod processors;
mod pull;
mod reflection;
mod replicas;
mod requests;
mod scale;
mod validation;
