//! Reliability and security of the gRPC service, end to end: hostile scripts, bad input,
//! overload, deadlines, draining, TLS and mutual TLS, credentials, metrics and a soak run —
//! each against a real server on `127.0.0.1:0` (traffic never leaves loopback). Privacy of logs
//! is tested in `tests/privacy.rs` (it needs the process-wide log subscriber).
//!
//! Every test builds its own rules folder (see `support::fixture`) so that edits to the bundled rules
//! cannot make these tests flaky; only the property test reads the bundled rules (the
//! partnerships among them that currently build), as the contract says the service must not
//! panic or hang on them whatever the request.

// Test crates share helper modules (`tests/support`), whose items must stay `pub`.
#![allow(unreachable_pub)]

#[path = "../support/mod.rs"]
mod support;

mod scripts;
mod input;
mod load;
mod security;
mod metrics;
mod soak;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpc_rules::engine::Limits;
use cpc_rules::grpc::pb;
use cpc_rules::grpc::pb::decision_service_client::DecisionServiceClient;
use cpc_rules::grpc::pb::rules_service_client::RulesServiceClient;
use cpc_rules::grpc::server::ServerOptions;
use prost_types::value::Kind as V;
use support::{HOSTILE, child, evaluate, facts, fixture, load, slow_limits, start};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------




fn slow(ms: u32) -> pb::EvaluateRequest {
    evaluate("good", "slow", facts(&[("ms", V::NumberValue(f64::from(ms)))]))
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(message);
    r.set_timeout(timeout);
    r
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    r
}

fn bad_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let bad = details.bad_request().unwrap_or_else(|| panic!("INVALID_ARGUMENT carries a BadRequest: {status:?}"));
    bad.field_violations.iter().map(|v| v.field.clone()).collect()
}

fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}
