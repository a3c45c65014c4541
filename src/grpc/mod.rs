//! The gRPC transport: the `cpc.v1` services over tonic.
//!
//! The decision core knows nothing of protobuf; this module is the edge. [`convert`] turns
//! typed requests into the core's facts (refusing unset enums, missing required booleans and
//! oversized input, naming the field) and decisions into protobuf; [`status`] is the one place
//! an error or refusal becomes a [`tonic::Status`]; [`service`] implements the two services over
//! a shared [`crate::store::RuleStore`], running every script off the async executor within a
//! bounded queue and the call's deadline; [`guard`] is the layer in front of every call (access
//! policy from [`auth`], rate and per-connection limits from [`limits`], deadlines, metrics);
//! [`record`] serves the decision record (`cpc.v1.RecordService`) to auditors;
//! [`transport`] carries per-connection state and the TLS settings; [`metrics`] keeps and serves
//! the Prometheus metrics; [`server`] assembles all of it with the health and reflection
//! services and serves until shutdown. `docs/reliability.md` says what each guarantees.

pub mod admission;
pub mod auth;
pub mod convert;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod record;
pub mod server;
pub mod service;
pub mod status;
pub mod transport;

/// The generated `cpc.v1` protobuf messages, clients and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("cpc.v1");
}

/// The encoded `FileDescriptorSet` of `cpc.proto` (with its imports), for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cpc_descriptor.bin"));
