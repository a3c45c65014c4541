//! cpc-rules: a decision engine for child protection conferences in England.
//!
//! Each local safeguarding partnership's published rules are encoded as Rhai scripts under
//! `rules/<partnership>/`. The crate is layered so each layer can change alone:
//!
//! - [`model`], [`facts`], [`calendar`], [`engine`]: the pure core — facts in, decision out, no
//!   I/O and no transport;
//! - [`cases`]: test cases as data, run by `cargo test` and by `cpc-rules test`;
//! - [`store`]: loading rule sets from disk, watching them, and swapping them atomically;
//! - [`grpc`]: the tonic service, converting protobuf at the edge and mapping errors to status
//!   in one place;
//! - [`http`]: the web console and the JSON API on one HTTP port, through the same decider;
//! - [`record`]: the decision record — every decision kept durably, the revision archive,
//!   replay and the impact of a rule change on recorded decisions.

pub mod calendar;
pub mod clock;
pub mod error;
pub mod facts;
pub mod vocabulary;
pub mod model;
pub mod engine;
pub mod suggest;
pub mod cases;
pub mod store;
pub mod record;
pub mod grpc;
pub mod http;
pub mod telemetry;
