//! The gRPC transport: the `cpc.v1` services over tonic.
//!
//! The decision core knows nothing of protobuf; this module is the edge. [`convert`] turns
//! typed requests into the core's facts (refusing unset enums and missing required booleans,
//! naming the field) and decisions into protobuf; [`status`] is the one place a
//! [`crate::error::DecisionError`] becomes a [`tonic::Status`]; [`service`] implements the two
//! services over a shared [`crate::store::RuleStore`], running every script off the async
//! executor; [`server`] assembles them with the health and reflection services and serves until
//! shutdown.

pub mod convert;
pub mod server;
pub mod service;
pub mod status;

/// The generated `cpc.v1` protobuf messages, clients and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("cpc.v1");
}

/// The encoded `FileDescriptorSet` of `cpc.proto` (with its imports), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpc_descriptor.bin"));
