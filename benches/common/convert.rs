//! Turning what a script returns into a `Decision`: a copy of the engine's current conversion
//! (`RuleSet::to_decision` and its helpers in `src/engine/ruleset.rs`, which are private) and
//! the conversion proposed in `docs/performance.md`, so that both can be measured on the maps
//! the real scripts return (`conversion/*` in `cargo bench --bench decisions`).
//!
//! The proposed version gives the same decisions and the same error messages; it reads each
//! map once (one pass over its entries instead of a B-tree search and removal per field),
//! builds the `reasons[i]`/`actions[i]` labels only when there is an error to report, and
//! checks due dates with a hand-written `YYYY-MM-DD` parser instead of chrono's format-string
//! parser. The decision id and timestamp are made the same way in both.

use std::collections::HashMap;

use cpc_rules::engine::ActionCatalogue;
use cpc_rules::model::{Action, Citation, Decision, Details, GroundRoute, Reason};
use rhai::{Dynamic, Map};

/// What the conversion needs from the rule set.
pub struct Ctx<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub outcomes: &'a [String],
    pub revision: &'a str,
    /// section heading → document title
    pub sections: &'a HashMap<String, String>,
    pub actions: &'a ActionCatalogue,
}

// ---- the current conversion (copied from src/engine/ruleset.rs) -------------------------------

pub fn current(ctx: &Ctx, value: Dynamic) -> Result<Decision, String> {
    let mut map = value
        .try_cast::<Map>()
        .ok_or("the script did not return a decision; end it with `return decide(outcome, summary, reasons, actions);`")?;
    let outcome = take_string(&mut map, "outcome", "decision")?;
    if !ctx.outcomes.iter().any(|o| *o == outcome) {
        return Err(format!("returned outcome `{outcome}`, which is not a `{}` outcome ({})", ctx.kind, ctx.outcomes.join(", ")));
    }
    let summary = take_string(&mut map, "summary", "decision")?;
    if summary.trim().is_empty() {
        return Err("the decision's summary is empty".into());
    }
    let reasons = take_array(&mut map, "reasons", "decision")?
        .into_iter()
        .enumerate()
        .map(|(i, r)| to_reason(ctx, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    if reasons.is_empty() {
        return Err("a decision needs at least one reason".into());
    }
    let actions = take_array(&mut map, "actions", "decision")?
        .into_iter()
        .enumerate()
        .map(|(i, a)| to_action(ctx, i, a))
        .collect::<Result<Vec<_>, _>>()?;
    let details = match map.remove("details") {
        None => Details::default(),
        Some(d) if d.is_unit() => Details::default(),
        Some(d) => to_details(d)?,
    };
    if let Some(extra) = map.keys().next() {
        return Err(format!("the decision has an unexpected field `{extra}`"));
    }
    Ok(Decision {
        decision_id: uuid::Uuid::new_v4().to_string(),
        partnership: ctx.id.to_string(),
        kind: ctx.kind.to_string(),
        outcome,
        summary,
        reasons,
        actions,
        rules_revision: ctx.revision.to_string(),
        decided_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        details,
    })
}

fn to_reason(ctx: &Ctx, i: usize, r: Dynamic) -> Result<Reason, String> {
    let what = format!("reasons[{i}]");
    let mut m = r.try_cast::<Map>().ok_or_else(|| format!("{what} is not a reason; build it with reason(…) or assumption(…)"))?;
    let rule_id = take_string(&mut m, "rule_id", &what)?;
    let section = take_string(&mut m, "section", &what)?;
    let text = take_string(&mut m, "text", &what)?;
    let assumption = m.remove("assumption").and_then(|v| v.as_bool().ok()).unwrap_or(false);
    if rule_id.trim().is_empty() || text.trim().is_empty() {
        return Err(format!("{what} needs a rule id and text"));
    }
    let document = ctx
        .sections
        .get(&section)
        .ok_or_else(|| format!("{what} cites section `{section}`, which is not listed in partnership.toml"))?;
    Ok(Reason { rule_id, text, citation: Citation { document: document.clone(), section, assumption } })
}

fn to_action(ctx: &Ctx, i: usize, a: Dynamic) -> Result<Action, String> {
    let what = format!("actions[{i}]");
    let mut m = a.try_cast::<Map>().ok_or_else(|| format!("{what} is not an action; build it with action(…)"))?;
    let code = take_string(&mut m, "code", &what)?;
    if !ctx.actions.codes.contains_key(&code) {
        return Err(format!("{what} has action code `{code}`, which is not listed in actions.toml"));
    }
    let description = take_string(&mut m, "description", &what)?;
    let responsible = take_string(&mut m, "responsible", &what)?;
    let due_date = match m.remove("due_date") {
        None => None,
        Some(d) if d.is_unit() => None,
        Some(d) => {
            let s = d.into_string().map_err(|t| format!("{what}.due_date is a {t}, not a date"))?;
            if cpc_rules::facts::parse_date(&s).is_none() {
                return Err(format!("{what}.due_date `{s}` is not a YYYY-MM-DD date"));
            }
            Some(s)
        }
    };
    Ok(Action { code, description, due_date, responsible })
}

fn take_string(m: &mut Map, key: &str, what: &str) -> Result<String, String> {
    match m.remove(key) {
        None => Err(format!("the {what} has no `{key}`")),
        Some(v) => v.into_string().map_err(|t| format!("the {what}'s `{key}` is a {t}, not text")),
    }
}

fn take_array(m: &mut Map, key: &str, what: &str) -> Result<rhai::Array, String> {
    match m.remove(key) {
        None => Err(format!("the {what} has no `{key}`")),
        Some(v) => v.into_array().map_err(|t| format!("the {what}'s `{key}` is a {t}, not a list")),
    }
}

fn strings(v: Dynamic, what: &str) -> Result<Vec<String>, String> {
    v.into_array()
        .map_err(|t| format!("details.{what} is a {t}, not a list"))?
        .into_iter()
        .map(|s| s.into_string().map_err(|t| format!("details.{what} holds a {t}, not text")))
        .collect()
}

fn to_details(d: Dynamic) -> Result<Details, String> {
    let mut m = d.try_cast::<Map>().ok_or("details must be a map")?;
    let mut out = Details::default();
    if let Some(c) = m.remove("categories") {
        out.categories = strings(c, "categories")?;
    }
    if let Some(p) = m.remove("panel_recommendations") {
        out.panel_recommendations = strings(p, "panel_recommendations")?;
    }
    if let Some(g) = m.remove("grounds") {
        for (i, item) in g.into_array().map_err(|_| "details.grounds must be a list")?.into_iter().enumerate() {
            let what = format!("details.grounds[{i}]");
            let mut gm = item.try_cast::<Map>().ok_or_else(|| format!("{what} must be a map"))?;
            let index = gm
                .remove("index")
                .and_then(|v| v.as_int().ok())
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{what} needs a whole-number index"))?;
            let category = take_string(&mut gm, "category", &what)?;
            let route = take_string(&mut gm, "route", &what)?;
            if route != "stage2_panel" && route != "agency_complaints_procedure" {
                return Err(format!("{what}.route `{route}` must be stage2_panel or agency_complaints_procedure"));
            }
            out.grounds.push(GroundRoute { index, category, route });
        }
    }
    if let Some(extra) = m.keys().next() {
        return Err(format!("details has an unexpected field `{extra}`"));
    }
    Ok(out)
}

// ---- the proposed conversion ------------------------------------------------------------------

/// A field of a map read in one pass, converted to text; `what` names the map in errors only.
fn text(v: Option<Dynamic>, key: &str, what: &dyn Fn() -> String) -> Result<String, String> {
    match v {
        None => Err(format!("the {} has no `{key}`", what())),
        Some(v) => v.into_string().map_err(|t| format!("the {}'s `{key}` is a {t}, not text", what())),
    }
}

pub fn proposed(ctx: &Ctx, value: Dynamic) -> Result<Decision, String> {
    let map = value
        .try_cast::<Map>()
        .ok_or("the script did not return a decision; end it with `return decide(outcome, summary, reasons, actions);`")?;
    let (mut outcome, mut summary, mut reasons, mut actions, mut details, mut extra) = (None, None, None, None, None, None);
    for (k, v) in map {
        match k.as_str() {
            "outcome" => outcome = Some(v),
            "summary" => summary = Some(v),
            "reasons" => reasons = Some(v),
            "actions" => actions = Some(v),
            "details" => details = Some(v),
            _ => {
                extra.get_or_insert(k);
            }
        }
    }
    let what = || "decision".to_string();
    let outcome = text(outcome, "outcome", &what)?;
    if !ctx.outcomes.iter().any(|o| *o == outcome) {
        return Err(format!("returned outcome `{outcome}`, which is not a `{}` outcome ({})", ctx.kind, ctx.outcomes.join(", ")));
    }
    let summary = text(summary, "summary", &what)?;
    if summary.trim().is_empty() {
        return Err("the decision's summary is empty".into());
    }
    let list = |v: Option<Dynamic>, key: &str| -> Result<rhai::Array, String> {
        match v {
            None => Err(format!("the decision has no `{key}`")),
            Some(v) => v.into_array().map_err(|t| format!("the decision's `{key}` is a {t}, not a list")),
        }
    };
    let reasons = list(reasons, "reasons")?
        .into_iter()
        .enumerate()
        .map(|(i, r)| to_reason_fast(ctx, i, r))
        .collect::<Result<Vec<_>, _>>()?;
    if reasons.is_empty() {
        return Err("a decision needs at least one reason".into());
    }
    let actions = list(actions, "actions")?
        .into_iter()
        .enumerate()
        .map(|(i, a)| to_action_fast(ctx, i, a))
        .collect::<Result<Vec<_>, _>>()?;
    let details = match details {
        None => Details::default(),
        Some(d) if d.is_unit() => Details::default(),
        Some(d) => to_details(d)?, // rare enough (two kinds, a few grounds) to keep as it is
    };
    if let Some(extra) = extra {
        return Err(format!("the decision has an unexpected field `{extra}`"));
    }
    Ok(Decision {
        decision_id: uuid::Uuid::new_v4().to_string(),
        partnership: ctx.id.to_string(),
        kind: ctx.kind.to_string(),
        outcome,
        summary,
        reasons,
        actions,
        rules_revision: ctx.revision.to_string(),
        decided_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        details,
    })
}

fn to_reason_fast(ctx: &Ctx, i: usize, r: Dynamic) -> Result<Reason, String> {
    let what = || format!("reasons[{i}]");
    let m = r.try_cast::<Map>().ok_or_else(|| format!("{} is not a reason; build it with reason(…) or assumption(…)", what()))?;
    let (mut rule_id, mut section, mut text_v, mut assumption) = (None, None, None, false);
    for (k, v) in m {
        match k.as_str() {
            "rule_id" => rule_id = Some(v),
            "section" => section = Some(v),
            "text" => text_v = Some(v),
            "assumption" => assumption = v.as_bool().unwrap_or(false),
            _ => {}
        }
    }
    let rule_id = text(rule_id, "rule_id", &what)?;
    let section = text(section, "section", &what)?;
    let text_s = text(text_v, "text", &what)?;
    if rule_id.trim().is_empty() || text_s.trim().is_empty() {
        return Err(format!("{} needs a rule id and text", what()));
    }
    let document = ctx
        .sections
        .get(&section)
        .ok_or_else(|| format!("{} cites section `{section}`, which is not listed in partnership.toml", what()))?;
    Ok(Reason { rule_id, text: text_s, citation: Citation { document: document.clone(), section, assumption } })
}

fn to_action_fast(ctx: &Ctx, i: usize, a: Dynamic) -> Result<Action, String> {
    let what = || format!("actions[{i}]");
    let m = a.try_cast::<Map>().ok_or_else(|| format!("{} is not an action; build it with action(…)", what()))?;
    let (mut code, mut description, mut responsible, mut due) = (None, None, None, None);
    for (k, v) in m {
        match k.as_str() {
            "code" => code = Some(v),
            "description" => description = Some(v),
            "responsible" => responsible = Some(v),
            "due_date" => due = Some(v),
            _ => {}
        }
    }
    let code = text(code, "code", &what)?;
    if !ctx.actions.codes.contains_key(&code) {
        return Err(format!("{} has action code `{code}`, which is not listed in actions.toml", what()));
    }
    let description = text(description, "description", &what)?;
    let responsible = text(responsible, "responsible", &what)?;
    let due_date = match due {
        None => None,
        Some(d) if d.is_unit() => None,
        Some(d) => {
            let s = d.into_string().map_err(|t| format!("{}.due_date is a {t}, not a date", what()))?;
            if parse_date_by_hand(&s).is_none() {
                return Err(format!("{}.due_date `{s}` is not a YYYY-MM-DD date", what()));
            }
            Some(s)
        }
    };
    Ok(Action { code, description, due_date, responsible })
}

/// The `YYYY-MM-DD` parser proposed for `cpc_rules::facts::parse_date` (same acceptance:
/// exactly ten bytes, four-digit year, two-digit month and day, a real date).
pub fn parse_date_by_hand(s: &str) -> Option<chrono::NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
}
