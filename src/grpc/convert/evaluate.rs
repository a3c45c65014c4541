//! `Evaluate`'s facts: a `google.protobuf.Struct` into the core's input format, bounded.
//!
//! Sizes are bounded here before any per-item work, so no request can make the server do (or
//! answer with) more than a small multiple of what a well-formed request costs: nesting
//! ([`MAX_FACTS_DEPTH`]), keys per map ([`MAX_FACT_KEYS`]), key length ([`MAX_FACT_KEY_LEN`]),
//! text length and values in all ([`MAX_FACT_VALUES`]). Whole numbers become integers, so
//! `age: 12` reaches the rules as the integer 12. Everything else — types, ranges, codes — is
//! the vocabulary's business, checked once in the core.

use serde_json::{Map, Number, Value};

use super::{EdgeRequest, addressing};
use crate::facts::FieldViolation;
use crate::grpc::pb;
use crate::vocabulary::{DEFAULT_MAX_ITEMS, DEFAULT_MAX_TEXT};

/// Deepest nesting of maps and lists in `Evaluate`'s facts (the facts map itself is depth 1).
pub const MAX_FACTS_DEPTH: usize = 8;
/// Most keys in one map of `Evaluate`'s facts.
pub const MAX_FACT_KEYS: usize = 64;
/// Longest key in `Evaluate`'s facts (characters).
pub const MAX_FACT_KEY_LEN: usize = 64;
/// Most values (of any kind, at any depth) in `Evaluate`'s facts.
pub const MAX_FACT_VALUES: usize = 4096;

impl TryFrom<pb::EvaluateRequest> for EdgeRequest {
    type Error = Vec<FieldViolation>;

    fn try_from(r: pb::EvaluateRequest) -> Result<Self, Self::Error> {
        let addressing = addressing(&r.partnership, Some(&r.kind), &r.case_ref);
        if !addressing.is_empty() {
            return Err(addressing);
        }
        let mut problems = Vec::new();
        let facts = match r.facts {
            Some(s) => {
                let mut budget = FactsBudget { values: 0, over: false };
                let facts = struct_to_json(s, "facts", 1, &mut budget, &mut problems);
                if budget.over {
                    problems.push(FieldViolation::new("facts", format!("holds more than {MAX_FACT_VALUES} values")));
                }
                facts
            }
            None => Value::Object(Map::new()),
        };
        Ok(EdgeRequest { partnership: r.partnership, kind: r.kind, facts, case_ref: r.case_ref, problems, facts_field: Some("facts") })
    }
}

/// How many values of `Evaluate`'s facts have been converted, against [`MAX_FACT_VALUES`].
struct FactsBudget {
    values: usize,
    over: bool,
}

impl FactsBudget {
    /// Counts one value; false (and stops the conversion's descent) once over budget.
    fn take(&mut self) -> bool {
        self.values += 1;
        if self.values > MAX_FACT_VALUES {
            self.over = true;
        }
        !self.over
    }
}

fn struct_to_json(s: prost_types::Struct, path: &str, depth: usize, budget: &mut FactsBudget, out: &mut Vec<FieldViolation>) -> Value {
    if s.fields.len() > MAX_FACT_KEYS {
        out.push(FieldViolation::new(path, format!("has {} keys; at most {MAX_FACT_KEYS} are accepted", s.fields.len())));
        return Value::Null;
    }
    let mut map = Map::new();
    for (k, v) in s.fields {
        if budget.over {
            break;
        }
        if k.chars().count() > MAX_FACT_KEY_LEN {
            let shown: String = k.chars().take(24).collect();
            out.push(FieldViolation::new(path, format!("has a key longer than {MAX_FACT_KEY_LEN} characters (`{shown}…`)")));
            continue;
        }
        let p = format!("{path}.{k}");
        let json = value_to_json(v, &p, depth, budget, out);
        map.insert(k, json);
    }
    Value::Object(map)
}

fn value_to_json(v: prost_types::Value, path: &str, depth: usize, budget: &mut FactsBudget, out: &mut Vec<FieldViolation>) -> Value {
    use prost_types::value::Kind as K;
    if !budget.take() {
        return Value::Null;
    }
    match v.kind {
        None => {
            out.push(FieldViolation::new(path, "has no value (set null, a number, text, true/false, a list or a map)"));
            Value::Null
        }
        Some(K::NullValue(_)) => Value::Null,
        Some(K::BoolValue(b)) => Value::Bool(b),
        Some(K::StringValue(s)) if s.chars().count() > DEFAULT_MAX_TEXT => {
            out.push(FieldViolation::new(path, format!("is longer than {} characters", DEFAULT_MAX_TEXT)));
            Value::Null
        }
        Some(K::StringValue(s)) => Value::String(s),
        Some(K::NumberValue(n)) => number_to_json(n, path, out),
        Some(K::StructValue(_) | K::ListValue(_)) if depth >= MAX_FACTS_DEPTH => {
            out.push(FieldViolation::new(path, format!("nests maps and lists more than {MAX_FACTS_DEPTH} deep")));
            Value::Null
        }
        Some(K::StructValue(s)) => struct_to_json(s, path, depth + 1, budget, out),
        Some(K::ListValue(l)) if l.values.len() > DEFAULT_MAX_ITEMS => {
            out.push(FieldViolation::new(path, format!("has {} items; at most {DEFAULT_MAX_ITEMS} are accepted", l.values.len())));
            Value::Null
        }
        Some(K::ListValue(l)) => Value::Array(
            l.values.into_iter().enumerate().map(|(i, item)| value_to_json(item, &format!("{path}[{i}]"), depth + 1, budget, out)).collect(),
        ),
    }
}

/// `-2^63` and `2^63` as `f64` (both exact).
const I64_MIN_F: f64 = -9_223_372_036_854_775_808.0;
const I64_END_F: f64 = 9_223_372_036_854_775_808.0;

fn number_to_json(n: f64, path: &str, out: &mut Vec<FieldViolation>) -> Value {
    if !n.is_finite() {
        out.push(FieldViolation::new(path, "must be a finite number"));
        return Value::Null;
    }
    if n.fract() == 0.0 && (I64_MIN_F..I64_END_F).contains(&n) {
        // In range and whole, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(n as i64);
    }
    match Number::from_f64(n) {
        Some(num) => Value::Number(num),
        None => {
            out.push(FieldViolation::new(path, "must be a finite number"));
            Value::Null
        }
    }
}


/// A JSON value as a protobuf `Value` (the way back from [`value_to_json`], for facts that were
/// validated already: a recorded decision's, or the CLI's when it calls a server).
pub fn json_to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() }),
        Value::Object(m) => Kind::StructValue(json_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct` (see [`json_to_value`]).
pub fn json_to_struct(m: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}
