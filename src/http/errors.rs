//! The one place a refusal becomes an HTTP answer.
//!
//! Every decision goes through [`crate::grpc::service::Decider`], whose refusals are
//! [`tonic::Status`]es built in [`crate::grpc::status`] with their `google.rpc` details. This
//! module reads those details back into an [`ApiError`] and maps the gRPC code to an HTTP status
//! once, so the JSON API and the console report exactly what a gRPC caller would get: the same
//! code, message, field violations, did-you-mean and known ids, and retry delay. The JSON body
//! follows Google's HTTP mapping of `google.rpc.Status` (AIP-193):
//! `{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": …, "details": […]}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::facts::FieldViolation;
use crate::grpc::status;

/// A refusal as the HTTP edge reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    /// The gRPC code the same refusal has over gRPC.
    pub code: Code,
    /// The message, as over gRPC.
    pub message: String,
    /// Each bad field (`google.rpc.BadRequest`).
    pub violations: Vec<FieldViolation>,
    /// `google.rpc.ErrorInfo`: reason and metadata (`did_you_mean`, `known`, `file`, …).
    pub info: Option<(String, BTreeMap<String, String>)>,
    /// `google.rpc.ResourceInfo`: type, name, owner and description of what was not found.
    pub resource: Option<[String; 4]>,
    /// `google.rpc.RetryInfo`: when a shed call may be retried.
    pub retry_after: Option<Duration>,
}

/// The HTTP status for a gRPC code (Google's mapping; shedding is 429 Too Many Requests).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<&tonic::Status> for ApiError {
    fn from(s: &tonic::Status) -> Self {
        let details = s.get_error_details();
        ApiError {
            code: s.code(),
            message: s.message().to_string(),
            violations: details
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| FieldViolation::new(v.field.clone(), v.description.clone())).collect())
                .unwrap_or_default(),
            info: details.error_info().map(|i| (i.reason.clone(), i.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
            resource: details
                .resource_info()
                .map(|r| [r.resource_type.clone(), r.resource_name.clone(), r.owner.clone(), r.description.clone()]),
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        ApiError::from(&s)
    }
}

impl ApiError {
    /// `INVALID_ARGUMENT` naming each bad field, built as gRPC builds it.
    pub(crate) fn invalid(violations: &[FieldViolation]) -> Self {
        status::invalid_argument(violations).into()
    }

    /// The HTTP status.
    pub(crate) fn http_status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// The "did you mean" suggestion of a `NOT_FOUND`, if any.
    pub(crate) fn did_you_mean(&self) -> Option<&str> {
        self.info.as_ref().and_then(|(_, m)| m.get("did_you_mean")).map(String::as_str)
    }

    /// The JSON body (AIP-193), details in the protobuf JSON mapping of `google.rpc` types.
    pub(crate) fn body(&self) -> Value {
        let mut details = Vec::new();
        if !self.violations.is_empty() {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": self.violations.iter().map(|v| json!({"field": v.field, "description": v.description})).collect::<Vec<_>>(),
            }));
        }
        if let Some([resource_type, resource_name, owner, description]) = &self.resource {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "resourceType": resource_type, "resourceName": resource_name, "owner": owner, "description": description,
            }));
        }
        if let Some((reason, metadata)) = &self.info {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason, "domain": status::ERROR_DOMAIN, "metadata": metadata,
            }));
        }
        if let Some(delay) = self.retry_after {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": format!("{}.{:03}s", delay.as_secs(), delay.subsec_millis()),
            }));
        }
        json!({"error": {
            "code": self.http_status().as_u16(),
            "status": status::code_name(self.code),
            "message": self.message,
            "details": details,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.http_status(), axum::Json(self.body())).into_response();
        if let Some(delay) = self.retry_after {
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DecisionError;
    use crate::grpc::status::{Shed, overloaded, to_status};

    #[test]
    fn codes_map_to_http_statuses_with_their_details() {
        let bad = ApiError::invalid(&[FieldViolation::new("age", "is out of range")]);
        assert_eq!(bad.http_status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad.body()["error"]["details"][0]["fieldViolations"][0]["field"], "age");

        let nf = ApiError::from(to_status(&DecisionError::UnknownPartnership {
            id: "yrok".into(),
            suggestion: Some("york".into()),
            known: vec!["barnsley".into(), "york".into()],
        }));
        assert_eq!(nf.http_status(), StatusCode::NOT_FOUND);
        assert_eq!(nf.did_you_mean(), Some("york"));
        assert!(nf.body().to_string().contains("barnsley,york"));

        let shed = ApiError::from(overloaded(Shed::QueueFull, Duration::from_millis(250)));
        assert_eq!(shed.http_status(), StatusCode::TOO_MANY_REQUESTS);
        let response = shed.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
