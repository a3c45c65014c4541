//! Converting between protobuf and the decision core, at the edge and nowhere else.
//!
//! One room per job: [`requests`] turns the typed RPCs' messages into an [`EdgeRequest`],
//! [`evaluate`] does the same for `Evaluate`'s `Struct` of facts, and [`responses`] turns the
//! core's answers into messages. This layer refuses only what the core cannot see once the
//! protobuf is gone — a missing or over-long partnership id, kind or `case_ref` (at once), an
//! enum set to a number this version does not know, an over-sized `Struct` (reported with the
//! core's own findings, after the partnership and kind are found). Everything about the facts
//! themselves — types, ranges, codes, contradictions, and whether a fact is needed at all — is
//! the core's, checked once against the partnership's vocabulary.
//!
//! Enum values map to the vocabulary's snake_case codes by rule: strip the enum's prefix and
//! lower the case (`ROLE_NON_RESIDENT_PARENT` → `non_resident_parent`). `_UNSPECIFIED` means the
//! fact was not given. A unit test checks that every value of every enum maps to a code of the
//! bundled vocabulary, and every code to a value.

pub mod evaluate;
pub mod requests;
pub mod responses;

use serde_json::Value;

pub use evaluate::{json_to_struct, json_to_value};
pub use responses::{partnership_info, record_impact, reload_ids, timestamp};

use super::pb;
use crate::facts::FieldViolation;

/// Longest partnership id accepted (characters).
pub const MAX_PARTNERSHIP_LEN: usize = 64;
/// Longest decision kind name accepted (characters).
pub const MAX_KIND_LEN: usize = 64;
/// Longest `case_ref` accepted (characters).
pub const MAX_CASE_REF_LEN: usize = 128;

/// A decision request as it leaves the protobuf: addressed, with its facts in the core's input
/// format and the problems only the edge could see.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRequest {
    /// Partnership id.
    pub partnership: String,
    /// Decision kind name.
    pub kind: String,
    /// The facts: a JSON object of named facts.
    pub facts: Value,
    /// The caller's opaque reference, echoed in the decision and never logged.
    pub case_ref: String,
    /// Problems with the facts seen at the edge (an unknown enum number, an over-sized
    /// `Struct`), reported with the core's own findings.
    pub problems: Vec<FieldViolation>,
    /// Where the facts sit in the request: `None` for the typed RPCs (their own fields),
    /// `Some("facts")` for `Evaluate`, so violations name the request's path (`facts.age`).
    pub facts_field: Option<&'static str>,
}

/// A protobuf enum whose values map to the vocabulary's snake_case codes.
pub(crate) trait FactEnum: TryFrom<i32> {
    /// The value-name prefix to strip (`ROLE_`).
    const PREFIX: &'static str;
    /// The enum's name, for messages.
    const NAME: &'static str;
    /// The proto name of a known value (`ROLE_PARENT`).
    fn proto_name(value: i32) -> Option<&'static str>;
}

macro_rules! fact_enum {
    ($($ty:ident => $prefix:literal),* $(,)?) => {$(
        impl FactEnum for pb::$ty {
            const PREFIX: &'static str = $prefix;
            const NAME: &'static str = stringify!($ty);
            fn proto_name(value: i32) -> Option<&'static str> {
                pb::$ty::try_from(value).ok().map(|v| v.as_str_name())
            }
        }
    )*};
}

fact_enum! {
    Role => "ROLE_",
    Session => "SESSION_",
    ExclusionGround => "EXCLUSION_GROUND_",
    ChildWish => "CHILD_WISH_",
    ConferenceType => "CONFERENCE_TYPE_",
    SignificantHarm => "SIGNIFICANT_HARM_",
    AbuseCategory => "ABUSE_CATEGORY_",
    Complainant => "COMPLAINANT_",
    GroundCategory => "GROUND_CATEGORY_",
}

/// The core's code for an enum value: `Ok(None)` when unset, `Err` for an unknown number.
pub(crate) fn enum_code<E: FactEnum>(value: i32) -> Result<Option<String>, String> {
    if value == 0 {
        return Ok(None);
    }
    match E::proto_name(value) {
        Some(name) => Ok(Some(name.strip_prefix(E::PREFIX).unwrap_or(name).to_ascii_lowercase())),
        None => Err(format!("{value} is not a known {} value", E::NAME)),
    }
}

/// Accepts a gRPC enum value name (`CONFERENCE_TYPE_INITIAL`) for a code (`initial`): every
/// enum prefix is tried. Used by the CLI so a facts block copied from a gRPC request works.
pub fn code_alias(name: &str) -> Option<String> {
    const PREFIXES: [&str; 9] = [
        "ROLE_", "SESSION_", "EXCLUSION_GROUND_", "CHILD_WISH_", "CONFERENCE_TYPE_", "SIGNIFICANT_HARM_", "ABUSE_CATEGORY_",
        "COMPLAINANT_", "GROUND_CATEGORY_",
    ];
    PREFIXES.iter().find_map(|p| name.strip_prefix(p)).filter(|rest| !rest.is_empty() && *rest != "UNSPECIFIED").map(str::to_ascii_lowercase)
}

/// Checks the request fields that address a decision: partnership, kind and case_ref.
pub(crate) fn addressing(partnership: &str, kind: Option<&str>, case_ref: &str) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if partnership.trim().is_empty() {
        out.push(FieldViolation::new("partnership", "is required: the id of the partnership whose rules decide (e.g. `york`)"));
    } else if partnership.chars().count() > MAX_PARTNERSHIP_LEN {
        out.push(FieldViolation::new("partnership", format!("is longer than {MAX_PARTNERSHIP_LEN} characters")));
    }
    if let Some(kind) = kind {
        if kind.trim().is_empty() {
            out.push(FieldViolation::new("kind", "is required: the decision kind's name (e.g. `child_invitation`)"));
        } else if kind.chars().count() > MAX_KIND_LEN {
            out.push(FieldViolation::new("kind", format!("is longer than {MAX_KIND_LEN} characters")));
        }
    }
    if case_ref.chars().count() > MAX_CASE_REF_LEN {
        out.push(FieldViolation::new("case_ref", format!("is longer than {MAX_CASE_REF_LEN} characters")));
    }
    out
}

/// Names a core violation (whose field is relative to the facts) by its path in the request,
/// e.g. `age` → `facts.age`. A violation of the facts as a whole stays `facts`.
pub fn prefix_violation(prefix: &str, v: FieldViolation) -> FieldViolation {
    if v.field == prefix {
        v
    } else {
        FieldViolation { field: format!("{prefix}.{}", v.field), description: v.description }
    }
}

/// Whether a violation of `outer` already accounts for one of `inner`.
pub(crate) fn covers(outer: &str, inner: &str) -> bool {
    inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
mod tests;
