//! The one place errors become gRPC statuses.
//!
//! Every error a caller can get from the decision service is mapped here, so the contract in
//! `cpc.proto` ("Errors") holds in one reviewable function: the caller's bad input is
//! `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming each field; an unknown partnership
//! or kind is `NOT_FOUND` with a `google.rpc.ResourceInfo`; a failure of the rules is `INTERNAL`
//! naming the script as `file:line:column`, with a `google.rpc.ErrorInfo`. No error is ever
//! turned into a decision.
//!
//! The service's own refusals are built here too, so every code a caller can see is listed in
//! this file: `RESOURCE_EXHAUSTED` when the server sheds load ([`overloaded`], with a
//! `google.rpc.RetryInfo` saying when to try again), `DEADLINE_EXCEEDED` when the caller's
//! deadline (or the server's request timeout) passes first ([`deadline_exceeded`]),
//! `UNAUTHENTICATED` for a missing or wrong credential ([`unauthenticated`]) and
//! `PERMISSION_DENIED` for a good credential that may not call the method
//! ([`permission_denied`]). A request that cannot be decoded is `INVALID_ARGUMENT`
//! ([`decode_failure`]), not the `INTERNAL` tonic gives it.
//!
//! The decision record's errors are mapped here too ([`record_error`]): a decision that could
//! not be recorded is `UNAVAILABLE` (reason `RECORD_UNAVAILABLE`), and no decision is returned.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{DecisionError, ScriptFailure};
use crate::facts::FieldViolation;

/// The `ErrorInfo` domain of every error this service reports.
pub const ERROR_DOMAIN: &str = "cpc-rules";

/// The `ErrorInfo` reason for a kind of script failure.
pub fn script_reason(failure: ScriptFailure) -> &'static str {
    match failure {
        ScriptFailure::Runtime => "SCRIPT_RUNTIME",
        ScriptFailure::Timeout => "SCRIPT_TIMEOUT",
        ScriptFailure::Limit => "SCRIPT_LIMIT",
        ScriptFailure::BadResult => "SCRIPT_BAD_RESULT",
    }
}

/// Most field violations one `INVALID_ARGUMENT` names; the rest are counted in a last entry, so
/// that a request with thousands of bad items cannot make an error larger than the request.
pub const MAX_REPORTED_VIOLATIONS: usize = 32;

/// Longest field path or description reported (characters); longer ones are cut with `…`.
const MAX_VIOLATION_TEXT: usize = 300;

fn clip(s: &str) -> String {
    if s.chars().count() > MAX_VIOLATION_TEXT {
        format!("{}…", s.chars().take(MAX_VIOLATION_TEXT).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `INVALID_ARGUMENT` naming every bad field (at most [`MAX_REPORTED_VIOLATIONS`] of them, then
/// a count of the rest under the field `…`).
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let mut shown: Vec<FieldViolation> =
        violations.iter().take(MAX_REPORTED_VIOLATIONS).map(|v| FieldViolation::new(clip(&v.field), clip(&v.description))).collect();
    if violations.len() > MAX_REPORTED_VIOLATIONS {
        let more = violations.len() - MAX_REPORTED_VIOLATIONS;
        shown.push(FieldViolation::new("…", format!("and {more} more problem(s) not listed")));
    }
    let summary = shown.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
    let details = ErrorDetails::with_bad_request(
        shown.iter().map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())).collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, format!("invalid request: {summary}"), details)
}

/// Maps a decision error to its status.
pub fn to_status(err: &DecisionError) -> Status {
    match err {
        DecisionError::InvalidFacts(violations) => invalid_argument(violations),
        DecisionError::MissingFact { .. } => invalid_argument(&err.violations()),
        DecisionError::UnknownPartnership { id, suggestion, known } => {
            let mut details = ErrorDetails::with_resource_info(
                "partnership",
                shorten(id),
                "",
                format!("no partnership with this id is loaded; known ids: {}", known.join(", ")),
            );
            details.set_error_info("UNKNOWN_PARTNERSHIP", ERROR_DOMAIN, not_found_metadata(suggestion, known));
            Status::with_error_details(Code::NotFound, not_found_message("partnership", id, suggestion), details)
        }
        DecisionError::UnknownKind { partnership, kind, suggestion, known } => {
            let mut details = ErrorDetails::with_resource_info(
                "decision_kind",
                shorten(kind),
                partnership.clone(),
                format!("the partnership has no rules for this decision kind; its kinds: {}", known.join(", ")),
            );
            details.set_error_info("UNKNOWN_KIND", ERROR_DOMAIN, not_found_metadata(suggestion, known));
            let message = match suggestion {
                Some(s) => format!("partnership `{partnership}` has no decision kind `{}`; did you mean `{s}`?", shorten(kind)),
                None => format!("partnership `{partnership}` has no decision kind `{}` (its kinds: {})", shorten(kind), known.join(", ")),
            };
            Status::with_error_details(Code::NotFound, message, details)
        }
        DecisionError::Script { failure, location, message } => {
            let mut metadata = HashMap::from([("file".to_string(), location.file.clone())]);
            if let Some(line) = location.line {
                metadata.insert("line".into(), line.to_string());
            }
            if let Some(column) = location.column {
                metadata.insert("column".into(), column.to_string());
            }
            Status::with_error_details(
                Code::Internal,
                format!("the partnership's rules failed and no decision was made: {location}: {message}"),
                ErrorDetails::with_error_info(script_reason(*failure), ERROR_DOMAIN, metadata),
            )
        }
    }
}

/// A caller-chosen name, truncated for a reply.
fn shorten(s: &str) -> String {
    if s.chars().count() > 64 { format!("{}…", s.chars().take(64).collect::<String>()) } else { s.to_string() }
}

fn not_found_message(what: &str, asked: &str, suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("unknown {what} `{}`; did you mean `{s}`?", shorten(asked)),
        None => format!("unknown {what} `{}`", shorten(asked)),
    }
}

fn not_found_metadata(suggestion: &Option<String>, known: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::from([("known".to_string(), known.join(","))]);
    if let Some(s) = suggestion {
        m.insert("did_you_mean".into(), s.clone());
    }
    m
}

impl From<DecisionError> for Status {
    fn from(err: DecisionError) -> Self {
        to_status(&err)
    }
}

/// The canonical name of a status code (`INVALID_ARGUMENT`), for logs and metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `INTERNAL` for work whose worker task died (a panic in the engine): never a decision.
pub fn worker_failed() -> Status {
    Status::with_error_details(
        Code::Internal,
        "the work could not be completed (an internal failure); no decision or change was made",
        ErrorDetails::with_error_info("ENGINE_FAILURE", ERROR_DOMAIN, HashMap::new()),
    )
}

/// Why the server shed a call with `RESOURCE_EXHAUSTED`. Its [`Shed::reason`] is the
/// `ErrorInfo` reason and the `reason` label of the `cpc_shed_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shed {
    /// Every script slot was busy and the decision queue was full.
    QueueFull,
    /// Every script slot stayed busy for the longest time a decision may wait in the queue.
    QueueWait,
    /// The call's expected wait for a script slot is longer than the queue-delay bound (or,
    /// while the partnership's queue is overloaded, than its target).
    QueueDelay,
    /// The call's expected wait would leave it no time to be decided before its deadline.
    WouldMissDeadline,
    /// Every active partnership's queue is saturated: shed before the request was decoded.
    Overloaded,
    /// The connection sent more calls per second than it may.
    ConnectionRate,
    /// The server as a whole received more calls per second than it takes.
    GlobalRate,
    /// The connection had as many calls in progress as it may.
    ConnectionConcurrency,
    /// The server had as many connections open as it takes (the connection was closed).
    Connections,
}

impl Shed {
    /// The `ErrorInfo` reason (and metric label) for this kind of shedding.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "DECISION_QUEUE_FULL",
            Shed::QueueWait => "DECISION_QUEUE_WAIT",
            Shed::QueueDelay => "DECISION_QUEUE_DELAY",
            Shed::WouldMissDeadline => "DECISION_WOULD_MISS_DEADLINE",
            Shed::Overloaded => "DECISION_OVERLOADED",
            Shed::ConnectionRate => "CONNECTION_RATE_LIMITED",
            Shed::GlobalRate => "RATE_LIMITED",
            Shed::ConnectionConcurrency => "CONNECTION_CONCURRENCY_LIMITED",
            Shed::Connections => "TOO_MANY_CONNECTIONS",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Shed::QueueFull => "the server is at its decision capacity and its queue is full",
            Shed::QueueWait => "the server is at its decision capacity and no slot came free in time",
            Shed::QueueDelay => "the server is at its decision capacity and the call would wait longer than its queue-delay bound",
            Shed::WouldMissDeadline => "the server is at its decision capacity and the call would wait past its deadline",
            Shed::Overloaded => "the server is overloaded and shed the call before reading it",
            Shed::ConnectionRate => "this connection is sending calls faster than its rate limit",
            Shed::GlobalRate => "the server is receiving calls faster than its rate limit",
            Shed::ConnectionConcurrency => "this connection has as many calls in progress as it may",
            Shed::Connections => "the server has as many connections open as it takes",
        }
    }
}

/// `RESOURCE_EXHAUSTED`: the call was shed, not attempted, and may be retried after
/// `retry_after` (sent as `google.rpc.RetryInfo`).
pub fn overloaded(why: Shed, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_error_info(why.reason(), ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{}; no decision or change was made; retry after {} ms with backoff", why.message(), retry_after.as_millis()),
        details,
    )
}

/// The start of the messages tonic and prost give a request that cannot be decoded (bad wire
/// format, nesting deeper than prost's recursion limit, invalid UTF-8 in a string, a truncated
/// or badly framed message). tonic answers these `INTERNAL`; [`decode_failure`] recognises them.
const DECODE_FAILURES: [&str; 4] =
    ["failed to decode Protobuf message", "Unexpected EOF decoding stream", "protocol error: received message with invalid compression flag", "Message compressed, compression support not enabled"];

/// `INVALID_ARGUMENT` for a request tonic could not decode, when `status` is tonic's `INTERNAL`
/// for one; `None` for any other status. The request was the caller's mistake, so the answer
/// says so, with a `BadRequest` (what was wrong, naming message types and fields from the
/// schema, never the request's content) and an `ErrorInfo` reason `MALFORMED_REQUEST`.
pub fn decode_failure(status: &Status) -> Option<Status> {
    if status.code() != Code::Internal || !DECODE_FAILURES.iter().any(|p| status.message().starts_with(p)) {
        return None;
    }
    let what = clip(status.message());
    let mut details = ErrorDetails::with_bad_request(vec![tonic_types::FieldViolation::new(
        "",
        format!("the request is not a valid protobuf message of the method's type: {what}"),
    )]);
    details.set_error_info("MALFORMED_REQUEST", ERROR_DOMAIN, HashMap::new());
    Some(Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: it could not be decoded ({what}); no decision or change was made"),
        details,
    ))
}

/// `DEADLINE_EXCEEDED`: the caller's deadline (`grpc-timeout`) or the server's request timeout
/// passed before the call finished. `stage` says where it was (`waiting for a decision slot`).
pub fn deadline_exceeded(stage: &str) -> Status {
    Status::with_error_details(
        Code::DeadlineExceeded,
        format!("the call's deadline passed {stage}; no decision or change was made"),
        ErrorDetails::with_error_info("DEADLINE_EXCEEDED", ERROR_DOMAIN, HashMap::new()),
    )
}

/// The status for a decision-record error: a record that cannot be written or read is
/// `UNAVAILABLE` (retry; the server reports `NOT_SERVING` meanwhile); an unknown decision or
/// revision `NOT_FOUND`; a bad request argument `INVALID_ARGUMENT`; archived rules that no
/// longer decide `INTERNAL`; a bad configuration `FAILED_PRECONDITION`.
pub fn record_error(err: &crate::record::RecordError) -> Status {
    use crate::record::RecordError as E;
    let (code, reason) = match err {
        E::Unavailable(_) => (Code::Unavailable, "RECORD_UNAVAILABLE"),
        E::Config(_) => (Code::FailedPrecondition, "RECORD_CONFIGURATION"),
        E::NotFound(_) => (Code::NotFound, "RECORD_NOT_FOUND"),
        E::InvalidArgument(_) => (Code::InvalidArgument, "RECORD_INVALID_ARGUMENT"),
        E::Replay(_) => (Code::Internal, "REPLAY_FAILED"),
    };
    Status::with_error_details(code, err.to_string(), ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()))
}

/// `UNAVAILABLE`: the decision was made but could not be recorded, so it is not returned.
pub fn not_recorded(err: &crate::record::RecordError) -> Status {
    Status::with_error_details(
        Code::Unavailable,
        format!("the decision could not be recorded, so it is not returned; retry later ({err})"),
        ErrorDetails::with_error_info("RECORD_UNAVAILABLE", ERROR_DOMAIN, HashMap::new()),
    )
}

/// `FAILED_PRECONDITION`: the server runs without a decision record (`--record off`).
pub fn record_off() -> Status {
    Status::with_error_details(
        Code::FailedPrecondition,
        "this server runs without a decision record (--record off)",
        ErrorDetails::with_error_info("RECORD_OFF", ERROR_DOMAIN, HashMap::new()),
    )
}

/// `UNAUTHENTICATED`: no credential, or one the server does not accept. `why` never quotes the
/// credential.
pub fn unauthenticated(why: &str) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        format!("{why}; send `authorization: Bearer <token>` metadata (or a client certificate the server trusts)"),
        ErrorDetails::with_error_info("UNAUTHENTICATED", ERROR_DOMAIN, HashMap::new()),
    )
}

/// `PERMISSION_DENIED`: a valid credential that may not call `method` (e.g. a caller token on
/// an admin method).
pub fn permission_denied(method: &str, needs: &str) -> Status {
    Status::with_error_details(
        Code::PermissionDenied,
        format!("{method} needs {needs}; the credential sent does not grant it"),
        ErrorDetails::with_error_info("PERMISSION_DENIED", ERROR_DOMAIN, HashMap::from([("method".to_string(), method.to_string())])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Location;

    #[test]
    fn script_failures_name_the_script_and_position() {
        let err = DecisionError::Script {
            failure: ScriptFailure::Timeout,
            location: Location::at("york/plan_type.rhai", Some(12), Some(5)),
            message: "too slow".into(),
        };
        let status = to_status(&err);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("york/plan_type.rhai:12:5"), "{}", status.message());
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "SCRIPT_TIMEOUT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("line").map(String::as_str), Some("12"));
    }

    #[test]
    fn invalid_facts_carry_field_violations() {
        let status = to_status(&DecisionError::InvalidFacts(vec![FieldViolation::new("age", "-1 is outside 0–17")]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations[0].field, "age");
    }

    #[test]
    fn huge_violation_lists_are_capped() {
        let many: Vec<FieldViolation> = (0..1000).map(|i| FieldViolation::new(format!("grounds[{i}]"), "x".repeat(10_000))).collect();
        let status = invalid_argument(&many);
        let details = status.get_error_details();
        let bad = details.bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), MAX_REPORTED_VIOLATIONS + 1);
        assert!(bad.field_violations[0].description.chars().count() <= MAX_VIOLATION_TEXT + 1);
        assert!(bad.field_violations.last().unwrap().description.contains("968 more"));
    }

    #[test]
    fn shedding_says_when_to_retry() {
        let status = overloaded(Shed::QueueFull, Duration::from_millis(250));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "DECISION_QUEUE_FULL");
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_millis(250)));
        assert_eq!(deadline_exceeded("x").code(), Code::DeadlineExceeded);
        assert_eq!(unauthenticated("x").code(), Code::Unauthenticated);
        assert_eq!(permission_denied("ReloadRules", "an admin credential").code(), Code::PermissionDenied);
    }

    #[test]
    fn decode_failures_are_the_callers_problem() {
        let tonic_says = Status::internal("failed to decode Protobuf message: Struct.fields: Value.kind: recursion limit reached");
        let status = decode_failure(&tonic_says).expect("recognised");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "MALFORMED_REQUEST");
        assert!(details.bad_request().unwrap().field_violations[0].description.contains("recursion limit"));
        assert!(decode_failure(&Status::internal("the partnership's rules failed")).is_none());
        assert!(decode_failure(&Status::invalid_argument("failed to decode Protobuf message")).is_none());
    }

    #[test]
    fn unknown_addresses_are_not_found() {
        let p = DecisionError::UnknownPartnership { id: "yrok".into(), suggestion: Some("york".into()), known: vec!["barnsley".into(), "york".into()] };
        let status = to_status(&p);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("did you mean `york`"), "{}", status.message());
        let details = status.get_error_details();
        let info = details.error_info().map(|i| i.metadata.clone()).unwrap_or_default();
        assert_eq!(info.get("known").map(String::as_str), Some("barnsley,york"));
        let kind = DecisionError::UnknownKind { partnership: "york".into(), kind: "weather".into(), suggestion: None, known: vec!["attendance".into()] };
        assert_eq!(to_status(&kind).code(), Code::NotFound);
    }
}
