//! The one place errors become gRPC statuses.
//!
//! Every error a caller can get from the decision service is mapped here, so the contract in
//! `cpc.proto` ("Errors") holds in one reviewable function: the caller's bad input is
//! `INVALID_ARGUMENT` with a `google.rpc.BadRequest` naming each field; an unknown partnership
//! or kind is `NOT_FOUND` with a `google.rpc.ResourceInfo`; a failure of the rules is `INTERNAL`
//! naming the script as `file:line:column`, with a `google.rpc.ErrorInfo`. No error is ever
//! turned into a decision.

use std::collections::HashMap;

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

/// `INVALID_ARGUMENT` naming every bad field.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let summary = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
    let details = ErrorDetails::with_bad_request(
        violations.iter().map(|v| tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())).collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, format!("invalid request: {summary}"), details)
}

/// Maps a decision error to its status.
pub fn to_status(err: &DecisionError) -> Status {
    match err {
        DecisionError::InvalidFacts(violations) => invalid_argument(violations),
        DecisionError::UnknownPartnership(id) => Status::with_error_details(
            Code::NotFound,
            err.to_string(),
            ErrorDetails::with_resource_info("partnership", id.clone(), "", "no partnership with this id is loaded; see RulesService.ListPartnerships"),
        ),
        DecisionError::UnknownKind { partnership, kind } => Status::with_error_details(
            Code::NotFound,
            err.to_string(),
            ErrorDetails::with_resource_info(
                "decision_kind",
                kind.clone(),
                partnership.clone(),
                "the partnership has no rules for this decision kind; see RulesService.ListPartnerships",
            ),
        ),
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

impl From<DecisionError> for Status {
    fn from(err: DecisionError) -> Self {
        to_status(&err)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScriptLocation;

    #[test]
    fn script_failures_name_the_script_and_position() {
        let err = DecisionError::Script {
            failure: ScriptFailure::Timeout,
            location: ScriptLocation { file: "york/plan_type.rhai".into(), line: Some(12), column: Some(5) },
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
    fn unknown_addresses_are_not_found() {
        assert_eq!(to_status(&DecisionError::UnknownPartnership("atlantis".into())).code(), Code::NotFound);
        let kind = DecisionError::UnknownKind { partnership: "york".into(), kind: "weather".into() };
        assert_eq!(to_status(&kind).code(), Code::NotFound);
    }
}
