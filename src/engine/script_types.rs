//! The Rust types scripts see: the facts they read and the reasons, actions and decision they
//! build.
//!
//! Scripts build their results through registered Rust types rather than maps: `reason(…)`
//! returns a [`Reason`] with its citation already resolved, `action(…)` an [`Action`] with its
//! due date parsed and its codes checked (both shared, [`ScriptReason`] and [`ScriptAction`], so
//! Rhai's copies are cheap), and `decide(…)` a [`ScriptDecision`]. So what a script
//! returns is already typed, and turning it into a [`crate::model::Decision`] is a move, not a
//! parse. The facts are a [`Facts`] value whose fields are read through an indexer: reading a
//! fact the call did not give stops the script with [`MissingFact`], which the engine reports
//! as the caller's problem, naming the fact and the script position that needed it.

use std::collections::HashMap;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position};

use super::sources::ActionCatalogue;
use crate::facts::{FactValue, Facts, format_date};
use crate::model::{Action, Citation, Details, GroundRoute, Reason};

/// A script read a fact that the call did not give. Carried as the value of a Rhai runtime
/// error, so the engine can tell it from a script's own errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFact(pub String);

/// A date the rules worked out falls outside the bank-holiday calendar: the caller's facts
/// are out of range, not the rules at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfCalendar(pub String);

/// What a script returns: a decision before the engine adds the partnership, kind and
/// revision.
#[derive(Debug, Clone)]
pub struct ScriptDecision {
    /// Outcome code.
    pub outcome: ImmutableString,
    /// One plain-English sentence.
    pub summary: ImmutableString,
    /// The reasons, in order.
    pub reasons: Vec<Arc<Reason>>,
    /// The actions.
    pub actions: Vec<Arc<Action>>,
    /// Kind-specific details.
    pub details: Details,
}

/// A reason as a script holds it. Rhai passes values by copy — into a list, into `list + list`,
/// into `decide(…)`'s arguments — and a reason built from constant arguments is made once, when
/// the rules are compiled, and copied out of the script on every run. Shared, a copy is a
/// reference count rather than four strings; the decision takes the text once, at the end.
#[derive(Debug, Clone)]
pub struct ScriptReason(pub Arc<Reason>);

/// An action as a script holds it, shared for the same reason as [`ScriptReason`].
#[derive(Debug, Clone)]
pub struct ScriptAction(pub Arc<Action>);

/// What the helpers that build results need to know about the rule set.
#[derive(Debug, Clone)]
pub struct ResultContext {
    /// Section heading → document title.
    pub sections: Arc<HashMap<String, String>>,
    /// Action codes and responsible parties.
    pub actions: Arc<ActionCatalogue>,
}

/// A result built wrongly (an unknown section or code, a bad date): the script's fault,
/// reported as a bad result rather than a runtime error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadResult(pub String);

fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(BadResult(msg.into())), Position::NONE))
}

/// A list of objects from the facts (complaint grounds), read-only. Kept as a typed value
/// rather than a Rhai list of maps, so the caller's text in it does not count against the
/// data a script may build (it is bounded by the vocabulary), and nothing is copied until a
/// script reads a field.
#[derive(Debug, Clone)]
pub struct FactList(Arc<[FactValue]>);

impl IntoIterator for FactList {
    type Item = Dynamic;
    type IntoIter = std::vec::IntoIter<Dynamic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(to_dynamic).collect::<Vec<_>>().into_iter()
    }
}

/// One object of the facts (a complaint ground), read-only; fields are read as `g.category`.
#[derive(Debug, Clone)]
pub struct FactObject(Arc<[(ImmutableString, FactValue)]>);

/// A fact's value as a script sees it.
pub fn to_dynamic(v: &FactValue) -> Dynamic {
    match v {
        FactValue::Bool(b) => Dynamic::from_bool(*b),
        FactValue::Int(i) => Dynamic::from_int(*i),
        FactValue::Date(d) => Dynamic::from(format_date(*d)),
        FactValue::Text(s) | FactValue::Code(s) => Dynamic::from(s.clone()),
        FactValue::List(items) if items.iter().any(|i| matches!(i, FactValue::Object(_))) => {
            Dynamic::from(FactList(items.clone()))
        }
        FactValue::List(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        FactValue::Object(fields) => Dynamic::from(FactObject(fields.clone())),
    }
}

/// Registers [`Facts`] and the result types, and the helpers that build results.
pub fn register(engine: &mut Engine, ctx: ResultContext) {
    engine.register_type_with_name::<Facts>("Facts");
    engine.register_indexer_get(|facts: &mut Facts, name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
        match facts.get(name) {
            Some(v) => Ok(to_dynamic(v)),
            None if facts.declares(name) => {
                Err(Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(MissingFact(name.to_string())), Position::NONE)))
            }
            None => Err(err(format!("`{name}` is not a fact of `{}`", facts.kind().name))),
        }
    });
    // `"name" in facts`: whether the call gave the fact.
    engine.register_fn("contains", |facts: &mut Facts, name: &str| facts.get(name).is_some());
    engine.register_type_with_name::<FactList>("List");
    engine.register_iterator::<FactList>();
    engine.register_fn("len", |l: &mut FactList| i64::try_from(l.0.len()).unwrap_or(i64::MAX));
    engine.register_fn("is_empty", |l: &mut FactList| l.0.is_empty());
    engine.register_type_with_name::<FactObject>("Object");
    engine.register_indexer_get(|o: &mut FactObject, name: &str| -> Result<Dynamic, Box<EvalAltResult>> {
        o.0.iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| to_dynamic(v))
            .ok_or_else(|| err(format!("`{name}` is not a field of this object")))
    });

    engine.register_type_with_name::<ScriptReason>("Reason");
    engine.register_get("rule_id", |r: &mut ScriptReason| ImmutableString::from(r.0.rule_id.as_str()));
    engine.register_get("assumption", |r: &mut ScriptReason| r.0.citation.assumption);
    engine.register_type_with_name::<ScriptAction>("Action");
    engine.register_get("code", |a: &mut ScriptAction| ImmutableString::from(a.0.code.as_str()));
    engine.register_get("due_date", |a: &mut ScriptAction| {
        a.0.due_date.map_or(Dynamic::UNIT, |d| Dynamic::from(format_date(d)))
    });
    engine.register_type_with_name::<ScriptDecision>("Decision");
    engine.register_get("outcome", |d: &mut ScriptDecision| d.outcome.clone());
    engine.register_set("details", |d: &mut ScriptDecision, m: Map| -> Result<(), Box<EvalAltResult>> {
        d.details = to_details(m)?;
        Ok(())
    });

    let c = ctx.clone();
    engine.register_fn("reason", move |id: ImmutableString, section: ImmutableString, text: ImmutableString| {
        make_reason(&c, id, section, text, false)
    });
    let c = ctx.clone();
    engine.register_fn("assumption", move |id: ImmutableString, section: ImmutableString, text: ImmutableString| {
        make_reason(&c, id, section, text, true)
    });
    let c = ctx.clone();
    engine.register_fn(
        "action",
        move |code: ImmutableString, description: ImmutableString, due: Dynamic, responsible: ImmutableString| {
            make_action(&c, code, description, due, responsible)
        },
    );
    let c = ctx;
    engine.register_fn("action", move |code: ImmutableString, description: ImmutableString, responsible: ImmutableString| {
        make_action(&c, code, description, Dynamic::UNIT, responsible)
    });
    engine.register_fn(
        "decide",
        |outcome: ImmutableString, summary: ImmutableString, reasons: Array, actions: Array| -> Result<ScriptDecision, Box<EvalAltResult>> {
            let reasons = reasons
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.try_cast::<ScriptReason>().map(|r| r.0).ok_or_else(|| err(format!("reasons[{i}] is not a reason; build it with reason(…) or assumption(…)"))))
                .collect::<Result<Vec<_>, _>>()?;
            let actions = actions
                .into_iter()
                .enumerate()
                .map(|(i, a)| a.try_cast::<ScriptAction>().map(|a| a.0).ok_or_else(|| err(format!("actions[{i}] is not an action; build it with action(…)"))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ScriptDecision { outcome, summary, reasons, actions, details: Details::default() })
        },
    );
}

fn make_reason(ctx: &ResultContext, id: ImmutableString, section: ImmutableString, text: ImmutableString, assumption: bool) -> Result<ScriptReason, Box<EvalAltResult>> {
    if id.trim().is_empty() || text.trim().is_empty() {
        return Err(err("a reason needs a rule id and text"));
    }
    let document = ctx
        .sections
        .get(section.as_str())
        .ok_or_else(|| err(format!("section `{section}` is not listed in partnership.toml")))?;
    Ok(ScriptReason(Arc::new(Reason {
        rule_id: id.to_string(),
        text: text.to_string(),
        citation: Citation { document: document.clone(), section: section.to_string(), assumption },
    })))
}

fn make_action(ctx: &ResultContext, code: ImmutableString, description: ImmutableString, due: Dynamic, responsible: ImmutableString) -> Result<ScriptAction, Box<EvalAltResult>> {
    if !ctx.actions.codes.contains_key(code.as_str()) {
        return Err(err(format!("action code `{code}` is not listed in actions.toml")));
    }
    if !ctx.actions.responsible.is_empty() && !ctx.actions.responsible.contains_key(responsible.as_str()) {
        return Err(err(format!("`{responsible}` is not listed under [responsible] in actions.toml")));
    }
    let due_date = if due.is_unit() {
        None
    } else {
        let s = due.into_immutable_string().map_err(|t| err(format!("an action's due date must be a date or (), not {t}")))?;
        Some(crate::facts::parse_date(&s).ok_or_else(|| err(format!("due date `{s}` is not a YYYY-MM-DD date")))?)
    };
    Ok(ScriptAction(Arc::new(Action { code: code.to_string(), description: description.to_string(), due_date, responsible: responsible.to_string() })))
}

fn strings(v: Dynamic, what: &str) -> Result<Vec<String>, Box<EvalAltResult>> {
    v.into_array()
        .map_err(|t| err(format!("details.{what} is a {t}, not a list")))?
        .into_iter()
        .map(|s| s.into_string().map_err(|t| err(format!("details.{what} holds a {t}, not text"))))
        .collect()
}

fn to_details(mut m: Map) -> Result<Details, Box<EvalAltResult>> {
    let mut out = Details::default();
    if let Some(c) = m.remove("categories") {
        out.categories = strings(c, "categories")?;
    }
    if let Some(p) = m.remove("panel_recommendations") {
        out.panel_recommendations = strings(p, "panel_recommendations")?;
    }
    if let Some(g) = m.remove("grounds") {
        for (i, item) in g.into_array().map_err(|_| err("details.grounds must be a list"))?.into_iter().enumerate() {
            let what = format!("details.grounds[{i}]");
            let mut gm = item.try_cast::<Map>().ok_or_else(|| err(format!("{what} must be a map")))?;
            let index = gm
                .remove("index")
                .and_then(|v| v.as_int().ok())
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| err(format!("{what} needs a whole-number index")))?;
            let text = |gm: &mut Map, key: &str| -> Result<String, Box<EvalAltResult>> {
                gm.remove(key)
                    .ok_or_else(|| err(format!("{what} has no `{key}`")))?
                    .into_string()
                    .map_err(|t| err(format!("{what}.{key} is a {t}, not text")))
            };
            let category = text(&mut gm, "category")?;
            let route = text(&mut gm, "route")?;
            if route != "stage2_panel" && route != "agency_complaints_procedure" {
                return Err(err(format!("{what}.route `{route}` must be stage2_panel or agency_complaints_procedure")));
            }
            if let Some(extra) = gm.keys().next() {
                return Err(err(format!("{what} has an unexpected field `{extra}`")));
            }
            out.grounds.push(GroundRoute { index, category, route });
        }
    }
    if let Some(extra) = m.keys().next() {
        return Err(err(format!("details has an unexpected field `{extra}`")));
    }
    Ok(out)
}
