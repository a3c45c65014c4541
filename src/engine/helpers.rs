//! The functions every rule script can call, registered once and documented once.
//!
//! [`HELPERS`] is the single list: [`register`] installs each entry in the engine and the rules
//! authoring guide's helper reference is generated from the same entries
//! (`cpc-rules helpers --markdown`), so the documentation cannot drift from what scripts can
//! actually call. A test checks that every registered function has an entry here.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Position};

use super::script_types::OutOfCalendar;
use crate::calendar::{Calendar, CalendarError};
use crate::facts::format_date;
use crate::vocabulary::Vocabulary;

/// Documentation of one helper function.
#[derive(Debug, Clone, Copy)]
pub struct HelperDoc {
    /// Function name as scripts call it.
    pub name: &'static str,
    /// Signature as a policy lead reads it.
    pub signature: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// A short example line of script.
    pub example: &'static str,
}

/// Every helper a script may call, with its documentation.
pub const HELPERS: &[HelperDoc] = &[
    HelperDoc {
        name: "decide",
        signature: "decide(outcome, summary, reasons, actions)",
        doc: "Builds the decision a script returns: an outcome code of the script's kind, one plain-English sentence for the family, the reasons (from `reason`/`assumption`) in order, and the actions (from `action`). Add kind-specific details by setting `.details` on the result.",
        example: r#"return decide("invite", "Your child will be invited.", [r], []);"#,
    },
    HelperDoc {
        name: "reason",
        signature: "reason(rule_id, section, text)",
        doc: "A reason resting on the partnership's guide: `section` must be a section heading listed in `partnership.toml`; `text` paraphrases the guide in your own words.",
        example: r#"let r = reason("york.exclusion.bail", "What support will the family receive in the Conference process?", "Bail conditions forbid contact, so the chair formally excludes the parent.");"#,
    },
    HelperDoc {
        name: "assumption",
        signature: "assumption(rule_id, section, text)",
        doc: "A reason where the guide is silent: the citation is marked `assumption: true`. Say in `text` what is assumed and that the partnership should confirm it. Cite the nearest section.",
        example: r#"let r = assumption("york.child.age", "Who is involved?", "The guide gives no age; we assume 12 or over counts as older. The partnership should confirm this.");"#,
    },
    HelperDoc {
        name: "action",
        signature: "action(code, description, due_date, responsible)  or  action(code, description, responsible)",
        doc: "Something that must happen next. `code` must be listed under [codes] in `rules/actions.toml` and `responsible` under [responsible]; `due_date` is a `YYYY-MM-DD` date (from the date helpers) or `()` when none applies.",
        example: r#"action("send_plan", "Send the written plan to parents and participants.", working_days_after(facts.conference_date, 1), "conference_chair")"#,
    },
    HelperDoc {
        name: "contains",
        signature: "\"name\" in facts",
        doc: "Whether the call gave the fact `name`. A call must carry a fact only when the script reads it, so test an optional fact this way before reading it: reading a fact the call did not give refuses the call, naming the fact and the line that read it.",
        example: r#"if "conference_date" in facts { /* dated actions */ }"#,
    },
    HelperDoc {
        name: "working_days_after",
        signature: "working_days_after(date, n)",
        doc: "The nth working day after `date` (Monday–Friday, not an England and Wales bank holiday): \"within n working days of date\".",
        example: r#"working_days_after("2025-04-17", 1)   // "2025-04-22" (Easter)"#,
    },
    HelperDoc {
        name: "months_after",
        signature: "months_after(date, n)",
        doc: "`date` plus n calendar months (clamped to a shorter month's end), moved back to the last working day on or before it: \"within n months of date\".",
        example: r#"months_after("2024-11-30", 3)   // "2025-02-28""#,
    },
    HelperDoc {
        name: "days_after",
        signature: "days_after(date, n)",
        doc: "`date` plus n calendar days (for \"every two weeks\" and similar).",
        example: r#"days_after("2025-03-03", 14)   // "2025-03-17""#,
    },
    HelperDoc {
        name: "days_before",
        signature: "days_before(date, n)",
        doc: "`date` minus n calendar days.",
        example: r#"days_before("2025-03-17", 1)   // "2025-03-16""#,
    },
    HelperDoc {
        name: "calendar_months_after",
        signature: "calendar_months_after(date, n)",
        doc: "`date` plus n calendar months, clamped to a shorter month's end, NOT moved off a weekend or bank holiday (compare with `months_after` to tell whether a date was moved).",
        example: r#"calendar_months_after("2024-11-30", 3)   // "2025-02-28""#,
    },
    HelperDoc {
        name: "working_day_on_or_before",
        signature: "working_day_on_or_before(date)",
        doc: "`date` itself when it is a working day, otherwise the last working day before it.",
        example: r#"working_day_on_or_before("2025-12-25")   // "2025-12-24""#,
    },
    HelperDoc {
        name: "is_working_day",
        signature: "is_working_day(date)",
        doc: "Whether `date` is a working day.",
        example: r#"is_working_day("2025-12-25")   // false"#,
    },
    HelperDoc {
        name: "working_days_between",
        signature: "working_days_between(from, to)",
        doc: "Working days after `from` up to and including `to` (negative when `to` is earlier).",
        example: r#"working_days_between("2025-04-17", "2025-04-22")   // 1"#,
    },
    HelperDoc {
        name: "is_provisional",
        signature: "is_provisional(date)",
        doc: "Whether `date` falls in a year whose bank holidays are marked provisional in the calendar.",
        example: r#"is_provisional("2028-03-01")   // true"#,
    },
    HelperDoc {
        name: "is_before",
        signature: "is_before(a, b)",
        doc: "Whether date `a` is earlier than date `b`.",
        example: r#"if is_before(facts.as_of, due) { ... }"#,
    },
    HelperDoc {
        name: "is_after",
        signature: "is_after(a, b)",
        doc: "Whether date `a` is later than date `b`.",
        example: r#"if is_after(facts.as_of, due) { /* overdue */ }"#,
    },
    HelperDoc {
        name: "median",
        signature: "median(numbers)",
        doc: "The median of a list of whole numbers (the lower middle for an even count); `()` for an empty list.",
        example: r#"median([2, 7, 4])   // 4"#,
    },
    HelperDoc {
        name: "lowest",
        signature: "lowest(numbers)",
        doc: "The smallest of a list of whole numbers; `()` for an empty list.",
        example: r#"lowest([2, 7, 4])   // 2"#,
    },
    HelperDoc {
        name: "highest",
        signature: "highest(numbers)",
        doc: "The largest of a list of whole numbers; `()` for an empty list.",
        example: r#"highest([2, 7, 4])   // 7"#,
    },
];

fn date_arg(s: &str) -> Result<chrono::NaiveDate, Box<EvalAltResult>> {
    crate::facts::parse_date(s).ok_or_else(|| format!("`{s}` is not a YYYY-MM-DD date").into())
}

fn count_arg(n: i64) -> Result<u32, Box<EvalAltResult>> {
    u32::try_from(n).ok().filter(|n| *n <= 3660).ok_or_else(|| format!("count {n} must be between 0 and 3660").into())
}

/// A calendar error inside a helper: a date outside the calendar is the caller's facts being
/// out of range ([`OutOfCalendar`]); anything else is the script's fault.
fn cal_err(e: CalendarError) -> Box<EvalAltResult> {
    match e {
        CalendarError::OutOfRange { .. } => {
            Box::new(EvalAltResult::ErrorRuntime(Dynamic::from(OutOfCalendar(e.to_string())), Position::NONE))
        }
        CalendarError::Invalid(_) => e.to_string().into(),
    }
}

fn ints(list: &Array) -> Result<Vec<i64>, Box<EvalAltResult>> {
    list.iter()
        .map(|v| v.as_int().map_err(|t| format!("expected whole numbers, found {t}").into()))
        .collect()
}

/// Installs the date and number helpers of [`HELPERS`] in `engine`, with date helpers on
/// `calendar`. (`decide`, `reason`, `assumption` and `action` are installed by
/// [`super::script_types::register`], which knows the rule set's sections and codes.)
pub fn register(engine: &mut Engine, calendar: Arc<Calendar>) {
    let c = calendar.clone();
    engine.register_fn("working_days_after", move |date: &str, n: i64| -> Result<ImmutableString, Box<EvalAltResult>> {
        Ok(c.working_days_after(date_arg(date)?, count_arg(n)?).map_err(cal_err).map(format_date)?)
    });
    let c = calendar.clone();
    engine.register_fn("months_after", move |date: &str, n: i64| -> Result<ImmutableString, Box<EvalAltResult>> {
        Ok(c.months_after(date_arg(date)?, count_arg(n)?).map_err(cal_err).map(format_date)?)
    });
    engine.register_fn("days_after", |date: &str, n: i64| -> Result<ImmutableString, Box<EvalAltResult>> {
        let d = date_arg(date)?;
        let n = count_arg(n)?;
        d.checked_add_days(chrono::Days::new(u64::from(n)))
            .map(format_date)
            .ok_or_else(|| "date out of range".into())
    });
    engine.register_fn("days_before", |date: &str, n: i64| -> Result<ImmutableString, Box<EvalAltResult>> {
        let d = date_arg(date)?;
        let n = count_arg(n)?;
        d.checked_sub_days(chrono::Days::new(u64::from(n))).map(format_date).ok_or_else(|| "date out of range".into())
    });
    engine.register_fn("calendar_months_after", |date: &str, n: i64| -> Result<ImmutableString, Box<EvalAltResult>> {
        let d = date_arg(date)?;
        let n = count_arg(n)?;
        d.checked_add_months(chrono::Months::new(n)).map(format_date).ok_or_else(|| "date out of range".into())
    });
    let c = calendar.clone();
    engine.register_fn("working_day_on_or_before", move |date: &str| -> Result<ImmutableString, Box<EvalAltResult>> {
        let mut d = date_arg(date)?;
        // At most a long weekend and a run of bank holidays: a bound, not a guess.
        for _ in 0..14 {
            if c.is_working_day(d).map_err(cal_err)? {
                return Ok(format_date(d));
            }
            d = d.pred_opt().ok_or("date out of range")?;
        }
        Err("no working day in the fortnight before this date: check the calendar".into())
    });
    let c = calendar.clone();
    engine.register_fn("is_working_day", move |date: &str| -> Result<bool, Box<EvalAltResult>> {
        c.is_working_day(date_arg(date)?).map_err(cal_err)
    });
    let c = calendar.clone();
    engine.register_fn("working_days_between", move |a: &str, b: &str| -> Result<i64, Box<EvalAltResult>> {
        c.working_days_between(date_arg(a)?, date_arg(b)?).map_err(cal_err)
    });
    let c = calendar;
    engine.register_fn("is_provisional", move |date: &str| -> Result<bool, Box<EvalAltResult>> {
        Ok(c.is_provisional(date_arg(date)?))
    });
    engine.register_fn("is_before", |a: &str, b: &str| -> Result<bool, Box<EvalAltResult>> { Ok(date_arg(a)? < date_arg(b)?) });
    engine.register_fn("is_after", |a: &str, b: &str| -> Result<bool, Box<EvalAltResult>> { Ok(date_arg(a)? > date_arg(b)?) });
    engine.register_fn("median", |list: Array| -> Result<Dynamic, Box<EvalAltResult>> {
        let mut v = ints(&list)?;
        v.sort_unstable();
        Ok(if v.is_empty() { Dynamic::UNIT } else { Dynamic::from_int(v[(v.len() - 1) / 2]) })
    });
    engine.register_fn("lowest", |list: Array| -> Result<Dynamic, Box<EvalAltResult>> {
        Ok(ints(&list)?.into_iter().min().map_or(Dynamic::UNIT, Dynamic::from_int))
    });
    engine.register_fn("highest", |list: Array| -> Result<Dynamic, Box<EvalAltResult>> {
        Ok(ints(&list)?.into_iter().max().map_or(Dynamic::UNIT, Dynamic::from_int))
    });
}

/// The script reference as Markdown — every helper from [`HELPERS`], then each kind's facts and
/// outcome codes from the vocabulary (used by `cpc-rules helpers`; a test checks
/// `docs/helpers.md` against it).
pub fn reference_markdown(vocabulary: &Vocabulary) -> String {
    let mut s = String::from(
        "# Script reference\n\nGenerated from the engine by `cpc-rules helpers > docs/helpers.md`; do not edit by hand.\n\n\
         Shared functions in `rules/shared/*.rhai` are documented in those files.\n\n## Helpers\n\n",
    );
    for h in HELPERS {
        s.push_str(&format!("### `{}`\n\n`{}`\n\n{}\n\n```rhai\n{}\n```\n\n", h.name, h.signature, h.doc, h.example));
    }
    s.push_str(&super::sandbox::allow_list_markdown(&super::Limits::default()));
    s.push_str(
        "## Facts and outcomes by kind\n\nGenerated from `rules/vocabulary.toml`. Scripts read facts as `facts.<name>`; a call must carry a fact \
         only when the script reads it, so test for an optional fact with `\"name\" in facts` before reading it.\n\n",
    );
    for kind in vocabulary.kinds() {
        s.push_str(&format!(
            "### `{}`\n\n{}\n\nOutcomes: {}\n\n| fact | type | meaning |\n|---|---|---|\n",
            kind.name,
            kind.doc,
            kind.outcomes.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", ")
        ));
        for f in &kind.facts {
            let default = if f.default.is_some() { " Defaults to today's date in England." } else { "" };
            s.push_str(&format!("| `{}` | {} | {}{default} |\n", f.name, f.ty.describe(), f.help));
        }
        s.push('\n');
    }
    s
}
