//! From what a script returned, or the error it stopped with, to the core's answer.
//!
//! A script's result is already a typed [`ScriptDecision`]; this module checks the little that
//! only makes sense once the script has finished (the outcome is one of the kind's, the summary
//! is not blank, there is a reason) and moves it into a [`Decision`]. Errors are sorted by who
//! is at fault: a fact the call did not give, or a date outside the calendar, is the caller's
//! problem; a limit, a runtime error or a bad result is the script's, with its position.

use std::sync::Arc;

use rhai::{Dynamic, EvalAltResult, Position};

use super::Limits;
use super::diagnostics::Location;
use super::ruleset::KindInfo;
use super::script_types::{BadResult, MissingFact, OutOfCalendar, ScriptAction, ScriptDecision, ScriptReason};
use crate::error::{DecisionError, ScriptFailure};
use crate::facts::FieldViolation;
use crate::model::{Action, Decision, Reason};

/// Moves a script's result into a decision, after the checks only a finished script allows.
pub(super) fn into_decision(info: &KindInfo, partnership: &str, revision: &str, value: Dynamic) -> Result<Decision, DecisionError> {
    let bad = |message: String| DecisionError::Script { failure: ScriptFailure::BadResult, location: Location::file(info.file.clone()), message };
    // Named as before reasons and actions were shared (the message names the Rust type).
    let type_name = if value.is::<ScriptReason>() {
        std::any::type_name::<Reason>()
    } else if value.is::<ScriptAction>() {
        std::any::type_name::<Action>()
    } else {
        value.type_name()
    };
    let d = value.try_cast::<ScriptDecision>().ok_or_else(|| {
        bad(format!("the script returned {type_name}, not a decision; end it with `decide(outcome, summary, reasons, actions)`"))
    })?;
    if !info.outcomes().iter().any(|o| o == d.outcome.as_str()) {
        return Err(bad(format!("returned outcome `{}`, which is not a `{}` outcome ({})", d.outcome, info.name, info.outcomes().join(", "))));
    }
    if d.summary.trim().is_empty() {
        return Err(bad("the decision's summary is empty".into()));
    }
    if d.reasons.is_empty() {
        return Err(bad("a decision needs at least one reason".into()));
    }
    Ok(Decision {
        partnership: partnership.to_string(),
        kind: info.name.clone(),
        outcome: d.outcome.to_string(),
        summary: d.summary.to_string(),
        // The text is copied here only when the script still shares it (a reason made once when
        // the rules were compiled is also held by the compiled script).
        reasons: d.reasons.into_iter().map(|r| Arc::try_unwrap(r).unwrap_or_else(|r| Reason::clone(&r))).collect(),
        actions: d.actions.into_iter().map(|a| Arc::try_unwrap(a).unwrap_or_else(|a| Action::clone(&a))).collect(),
        rules_revision: revision.to_string(),
        as_of_defaulted: None,
        details: d.details,
    })
}

/// Sorts a script's error into the caller's fault or the script's, with the innermost position.
pub(crate) fn script_error(file: &str, limits: &Limits, err: &EvalAltResult) -> DecisionError {
    let mut file = file.to_string();
    let mut e = err;
    let mut pos = err.position();
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, src, inner, p) => {
                if !src.is_empty() {
                    file = src.clone();
                }
                pos = if inner.position().is_none() { *p } else { inner.position() };
                e = inner;
            }
            EvalAltResult::ErrorInModule(_, inner, p) => {
                pos = if inner.position().is_none() { *p } else { inner.position() };
                e = inner;
            }
            _ => break,
        }
    }
    let location = Location::rhai(file, pos);
    if let EvalAltResult::ErrorRuntime(v, _) = e {
        if let Some(MissingFact(fact)) = v.clone().try_cast::<MissingFact>() {
            return DecisionError::MissingFact { fact, location, source_line: None };
        }
        if let Some(BadResult(message)) = v.clone().try_cast::<BadResult>() {
            return DecisionError::Script { failure: ScriptFailure::BadResult, location, message };
        }
        if let Some(OutOfCalendar(message)) = v.clone().try_cast::<OutOfCalendar>() {
            return DecisionError::InvalidFacts(vec![FieldViolation::new(
                "facts",
                format!("a date the rules work out from these facts is out of range: {message}"),
            )]);
        }
    }
    let (failure, message) = match e {
        EvalAltResult::ErrorTerminated(token, _) if super::is_budget_token(token) => (
            ScriptFailure::Timeout,
            format!("the script used more than its CPU budget of {} ms and was stopped", limits.cpu_budget.as_millis()),
        ),
        EvalAltResult::ErrorTooManyOperations(_) => (
            ScriptFailure::Limit,
            format!("the script took more than {} operations and was stopped (an endless loop?)", limits.max_operations),
        ),
        EvalAltResult::ErrorStackOverflow(_) => (
            ScriptFailure::Limit,
            format!("functions called each other more than {} deep and were stopped (endless recursion?)", limits.max_call_depth),
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => (
            ScriptFailure::Limit,
            format!(
                "the script built a value too large: {what} (limits: {} bytes of data, {} list elements, {} map entries)",
                limits.max_data_bytes, limits.max_array_size, limits.max_map_size
            ),
        ),
        EvalAltResult::ErrorTooManyVariables(_) | EvalAltResult::ErrorTooManyModules(_) => (ScriptFailure::Limit, strip_position(e)),
        EvalAltResult::ErrorRuntime(v, _) => (ScriptFailure::Runtime, format!("the script stopped with an error: {v}")),
        _ => (ScriptFailure::Runtime, strip_position(e)),
    };
    DecisionError::Script { failure, location, message }
}

/// An engine message without Rhai's own ` (line l, position p)` suffix.
pub(crate) fn strip_position(e: &EvalAltResult) -> String {
    let s = e.to_string();
    match s.rfind(" (line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The message of a parse error, without its position.
pub(crate) fn parse_message(e: &rhai::ParseError) -> String {
    strip_position(&EvalAltResult::ErrorParsing(e.err_type().clone(), Position::NONE))
}
