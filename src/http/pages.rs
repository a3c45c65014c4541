//! The console's pages, as server-rendered HTML (maud escapes every value it prints).
//!
//! Every page works without JavaScript; the one script only adds a "Print" button. Pages follow
//! the GOV.UK design patterns for accessibility: a skip link, one `h1`, labels on every input,
//! hints and errors tied to their inputs with `aria-describedby`, an error summary at the top
//! linking to each field, assumptions marked in words (not only colour), and a print stylesheet
//! for A4.

use chrono::{DateTime, NaiveDate, Utc};
use maud::{DOCTYPE, Markup, html};

use super::errors::ApiError;
use super::forms::field_id;
use super::json;
use super::register::{Cell, Matrix, Register};
use super::security::Session;

/// The console's sections, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// Partnerships.
    Partnerships,
    /// Make a decision.
    Decide,
    /// Stage 2 admissibility.
    Admissibility,
    /// Compare partnerships.
    Compare,
    /// Assumptions register.
    Assumptions,
    /// Look up a decision.
    Lookup,
    /// None (login, errors).
    None,
}

const NAV: [(Section, &str, &str); 6] = [
    (Section::Partnerships, "/", "Partnerships"),
    (Section::Decide, "/decide", "Make a decision"),
    (Section::Admissibility, "/admissibility", "Stage 2 admissibility"),
    (Section::Compare, "/compare", "Compare partnerships"),
    (Section::Assumptions, "/assumptions", "Assumptions"),
    (Section::Lookup, "/decisions", "Look up a decision"),
];

/// A code in words: `partly_eligible` → "Partly eligible".
pub(crate) fn humanize(code: &str) -> String {
    let s = code.replace(['_', '-'], " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Where a complaint ground goes, in words.
pub(crate) fn route_words(route: &str) -> String {
    match route {
        "stage2_panel" => "To the Stage 2 complaints panel".into(),
        "agency_complaints_procedure" => "To the agency's own complaints procedure (not the panel)".into(),
        other => humanize(other),
    }
}

/// A date as a person reads it: "Monday 2 June 2025".
pub(crate) fn long_date(d: NaiveDate) -> String {
    d.format("%A %-d %B %Y").to_string()
}

/// A time as a person reads it: "2 June 2025 at 14:03 UTC".
pub(crate) fn when(t: &str) -> String {
    DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc).format("%-d %B %Y at %H:%M UTC").to_string()).unwrap_or_else(|_| t.to_string())
}

/// The page frame.
pub(crate) fn layout(title: &str, current: Section, session: Option<&Session>, login_required: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en-GB" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – Child protection conference rules" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a class="skip-link" href="#main" { "Skip to main content" }
                header class="site-header" {
                    div class="wrap" {
                        p class="site-name" { a href="/" { "Child protection conference rules" } }
                        @if current != Section::None || session.is_some_and(|s| s.signed_in) {
                            nav aria-label="Main" {
                                ul {
                                    @for (s, href, label) in NAV {
                                        li { a href=(href) aria-current=[(s == current).then_some("page")] { (label) } }
                                    }
                                }
                            }
                        }
                        @if let Some(s) = session.filter(|s| s.signed_in && login_required) {
                            form method="post" action="/logout" class="signout" {
                                input type="hidden" name="_csrf" value=(s.csrf);
                                button type="submit" class="link-button" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" class="wrap" tabindex="-1" { (body) }
                footer class="site-footer" {
                    div class="wrap" {
                        p { "Decisions are made by each partnership's published rules. Where a guide is silent, the rules say what they assume; those reasons are marked " strong { "Assumption" } "." }
                    }
                }
            }
        }
    }
}

/// The error summary at the top of a form: each problem, linking to its field.
pub(crate) fn error_summary(problems: &[(Option<String>, String)]) -> Markup {
    html! {
        @if !problems.is_empty() {
            div class="error-summary" id="error-summary" role="alert" tabindex="-1" aria-labelledby="error-summary-title" {
                h2 id="error-summary-title" { "There is a problem" }
                ul {
                    @for (target, text) in problems {
                        li {
                            @match target {
                                Some(t) => a href=(format!("#{t}")) { (text) },
                                None => (text),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A refusal that is not about one field (unknown partnership, rules failure, overload).
pub(crate) fn refusal_text(e: &ApiError) -> String {
    match e.code {
        tonic::Code::NotFound => match e.did_you_mean() {
            Some(s) => format!("{} Did you mean “{s}”?", e.message),
            None => e.message.clone(),
        },
        tonic::Code::ResourceExhausted => "The server is busy making other decisions. Nothing was decided; please try again in a moment.".into(),
        tonic::Code::DeadlineExceeded => "The decision took too long and was stopped. Nothing was decided; please try again.".into(),
        tonic::Code::Internal => format!("The partnership's rules failed, so no decision was made. Please tell the rules' maintainers: {}", e.message),
        _ => e.message.clone(),
    }
}

/// The Partnerships page.
pub(crate) fn partnerships(list: &[json::Partnership]) -> Markup {
    html! {
        h1 { "Partnerships" }
        p class="lead" { "The rules each partnership has live now, when they went live, and the guidance they rest on." }
        @for p in list {
            section class="card" aria-labelledby=(format!("p-{}", p.id)) {
                h2 id=(format!("p-{}", p.id)) { (p.name) }
                dl class="summary-list" {
                    div { dt { "Identifier" } dd { code { (p.id) } } }
                    div { dt { "Live revision" } dd { code { (p.revision.chars().take(12).collect::<String>()) } } }
                    div { dt { "Went live" } dd { (when(&p.loaded_at)) } }
                    div {
                        dt { "Last refused reload" }
                        dd {
                            @match &p.last_failure {
                                None => "None since this revision went live.",
                                Some(f) => {
                                    p { strong { "Refused on " (when(&f.at)) } ". The revision above is still the one in use. Problems found:" }
                                    ul class="problems" { @for d in &f.diagnostics { li { code { (d) } } } }
                                }
                            }
                        }
                    }
                }
                h3 { "Guidance documents" }
                ul {
                    @for d in &p.documents {
                        li { (d.title) " " span class="muted" { "(" (d.source) "; " (d.sections.len()) " sections cited)" } }
                    }
                }
                h3 { "Decisions" }
                ul class="inline-list" {
                    @for k in &p.kinds {
                        li { a href=(format!("/decide/{}/{}", p.id, k.name)) { (humanize(&k.name)) span class="visually-hidden" { " with " (p.name) "'s rules" } } }
                    }
                }
            }
        }
    }
}

/// The decision picker: each partnership with its kinds.
pub(crate) fn decide_index(list: &[(String, String, Vec<(String, String)>)]) -> Markup {
    html! {
        h1 { "Make a decision" }
        p class="lead" { "Choose a partnership and the decision you need. The form asks for the facts that decision uses." }
        @for (id, name, kinds) in list {
            section class="card" aria-labelledby=(format!("d-{id}")) {
                h2 id=(format!("d-{id}")) { (name) }
                ul class="kinds" {
                    @for (k, doc) in kinds {
                        li { a href=(format!("/decide/{id}/{k}")) { (humanize(k)) span class="visually-hidden" { " with " (name) "'s rules" } } " — " span class="muted" { (doc) } }
                    }
                }
            }
        }
    }
}

/// A decision, as a person reads it.
pub(crate) fn decision(d: &json::Decision, heading_level_2: bool, title: &str) -> Markup {
    decision_parts(d, heading_level_2, title, true)
}

/// A decision, with or without its outcome box (a page that has already shown the outcome, such
/// as the admissibility record, leaves it out rather than saying it twice).
fn decision_parts(d: &json::Decision, heading_level_2: bool, title: &str, with_outcome: bool) -> Markup {
    let assumed = d.reasons.iter().filter(|r| r.citation.assumption).count();
    // A page may show two decisions (a replay): each section is labelled by its own heading.
    let heading_id = format!("decision-{}", title.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_ascii_lowercase());
    html! {
        section class="decision" aria-labelledby=(heading_id) {
            @if heading_level_2 { h2 id=(heading_id) { (title) } } @else { h1 id=(heading_id) { (title) } }
            @if with_outcome {
                div class=(format!("outcome outcome-{}", d.outcome)) {
                    p class="outcome-label" { "Outcome: " strong { (humanize(&d.outcome)) } }
                    p class="summary" { (d.summary) }
                }
            }
            @if !d.as_of_defaulted.is_empty() {
                p class="note" { "No assessment date was given, so today's date (" (d.as_of_defaulted) ") was used." }
            }
            @if !d.categories.is_empty() {
                h3 { "Categories of abuse" }
                ul { @for c in &d.categories { li { (humanize(c)) } } }
            }
            h3 { "Why" }
            @if assumed > 0 {
                p class="note" { (assumed) " of these reasons " (if assumed == 1 { "is an assumption" } else { "are assumptions" }) ": the partnership's guide is silent on the point, so the rules say what they assume. The partnership should confirm each one." }
            }
            ol class="reasons" {
                @for r in &d.reasons {
                    li class=[r.citation.assumption.then_some("assumption")] {
                        @if r.citation.assumption { strong class="tag" { "Assumption" } " " }
                        (r.text)
                        p class="citation" { "Rests on: " cite { (r.citation.document) } ", section “" (r.citation.section) "”" }
                    }
                }
            }
            h3 { "What happens next" }
            @if d.actions.is_empty() {
                p { "Nothing further is needed." }
            } @else {
                table {
                    caption class="visually-hidden" { "Actions" }
                    thead { tr { th scope="col" { "What" } th scope="col" { "Who" } th scope="col" { "Due by" } } }
                    tbody {
                        @for a in &d.actions {
                            tr {
                                td { (a.description) }
                                td { (humanize(&a.responsible)) }
                                td { @match NaiveDate::parse_from_str(&a.due_date, "%Y-%m-%d") { Ok(due) => time datetime=(a.due_date) { (long_date(due)) }, Err(_) => "No date set" } }
                            }
                        }
                    }
                }
            }
            (record_meta(d))
        }
    }
}

fn record_meta(d: &json::Decision) -> Markup {
    html! {
        dl class="meta" {
            div { dt { "Decision id" } dd { code { (d.decision_id) } } }
            div { dt { "Decided" } dd { (when(&d.decided_at)) } }
            div { dt { "Partnership" } dd { (d.partnership) } }
            div { dt { "Rules revision" } dd { code { (d.rules_revision.chars().take(12).collect::<String>()) } } }
        }
    }
}

/// One ground of a complaint as the panel's record shows it.
pub(crate) struct GroundLine {
    /// Number, from 1.
    pub number: usize,
    /// The complainant's words.
    pub words: String,
    /// The category in words.
    pub category: String,
    /// Where it goes, in words.
    pub route: String,
}

/// The admissibility answer, for the panel's file.
pub(crate) fn admissibility_result(partnership: &str, complainant: &str, grounds: &[GroundLine], missing: &[String], d: &json::Decision) -> Markup {
    html! {
        section class="admissibility record" aria-labelledby="result-title" {
            h1 id="result-title" { "Stage 2 admissibility: " (humanize(&d.outcome)) }
            p class="muted" { (partnership) " · decided " (when(&d.decided_at)) }
            button type="button" class="print-button no-print" hidden data-print { "Print this record" }
            div class=(format!("outcome outcome-{}", d.outcome)) {
                p class="summary" { (d.summary) }
            }
            dl class="summary-list" {
                div { dt { "Complainant" } dd { (complainant) } }
            }
            h2 { "The grounds" }
            @if grounds.is_empty() {
                p { "No grounds were given." }
            } @else {
                table class="grounds" {
                    caption class="visually-hidden" { "Each ground and where it goes" }
                    thead { tr { th scope="col" { "Ground" } th scope="col" { "In the complainant's words" } th scope="col" { "Category" } th scope="col" { "Where it goes" } } }
                    tbody {
                        @for g in grounds {
                            tr { th scope="row" { (g.number) } td { blockquote { (g.words) } } td { (g.category) } td { (g.route) } }
                        }
                    }
                }
            }
            h2 { "What the panel may recommend" }
            @if d.panel_recommendations.is_empty() {
                p { "The partnership's guide does not say what a Stage 2 panel may recommend, so nothing is listed." }
            } @else {
                ul { @for r in &d.panel_recommendations { li { (r) } } }
            }
            h2 { "What is missing" }
            @if missing.is_empty() {
                p { "Nothing: every statement the request needs was given." }
            } @else {
                ul class="missing" { @for m in missing { li { (m) } } }
            }
            (decision_reasons_and_actions(d))
        }
    }
}

fn decision_reasons_and_actions(d: &json::Decision) -> Markup {
    // The reasons and actions as on any decision, under the admissibility record's headings;
    // the outcome is already at the top of the record.
    html! { div class="record-decision" { (decision_parts(d, true, "Reasons and next steps", false)) } }
}

/// The comparison table.
pub(crate) fn compare(m: &Matrix) -> Markup {
    html! {
        h1 { "Compare partnerships" }
        p class="lead" { "The same standard situations, decided by each partnership's live rules. A reason marked † is an assumption: that partnership's guide is silent on the point." }
        div class="table-scroll" role="region" aria-labelledby="compare-caption" tabindex="0" {
            table class="matrix" {
                caption id="compare-caption" { "Outcome of each standard scenario, by partnership" }
                thead { tr { th scope="col" { "Scenario" } @for (_, name) in &m.partnerships { th scope="col" { (name) } } } }
                tbody {
                    @for (label, kind, cells) in &m.rows {
                        tr {
                            th scope="row" { (label) br; span class="muted" { (humanize(kind)) } }
                            @for c in cells {
                                td {
                                    @match c {
                                        Cell::Decided { outcome, assumed, actions } => {
                                            (humanize(outcome))
                                            @if *assumed { " †" span class="visually-hidden" { " (rests on an assumption)" } }
                                            @if let Some(actions) = actions {
                                                ul class="cell-actions" {
                                                    @for (code, due) in actions {
                                                        li { (humanize(code)) @if let Some(due) = due { " by " (due.format("%-d %b %Y").to_string()) } }
                                                    }
                                                }
                                            }
                                        }
                                        Cell::Refused(why) => span class="muted" { "No decision: " (why) },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The assumptions register.
pub(crate) fn assumptions(registers: &[Register]) -> Markup {
    html! {
        h1 { "Assumptions" }
        p class="lead" { "Every reason the rules give where a partnership's guide is silent, found by running each partnership's test cases and the standard scenarios. Each needs the partnership's sign-off." }
        @for r in registers {
            section class="card" aria-labelledby=(format!("a-{}", r.id)) {
                h2 id=(format!("a-{}", r.id)) { (r.name) " " span class="muted" { "(" (r.assumptions.len()) " assumptions, from " (r.scanned) " decisions; revision " code { (r.revision.chars().take(12).collect::<String>()) } ")" } }
                @if r.assumptions.is_empty() {
                    p { "No decision scanned rests on an assumption." }
                } @else {
                    table class="register" {
                        caption class="visually-hidden" { "Assumptions of " (r.name) }
                        thead { tr { th scope="col" { "Decision" } th scope="col" { "What the rules assume" } th scope="col" { "Cited to" } th scope="col" { "Seen in" } } }
                        tbody {
                            @for a in &r.assumptions {
                                tr {
                                    td { (humanize(&a.kind)) br; code class="rule-id" { (a.rule_id) } }
                                    td { (a.text) }
                                    td { cite { (a.document) } ", “" (a.section) "”" }
                                    td { (a.seen_in.join("; ")) @if a.count > a.seen_in.len() { " and " (a.count - a.seen_in.len()) " more" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The lookup page.
pub(crate) fn lookup(id: &str, message: Option<&str>, found: Option<&json::Decision>, csrf: &str) -> Markup {
    html! {
        h1 { "Look up a decision" }
        p class="lead" { "Find a decision again by its id, and replay it against the rules live now." }
        @if let Some(m) = message { div class="notice" role="status" { p { (m) } } }
        form method="get" action="/decisions" {
            div class="field" {
                label for="decision-id" { "Decision id" }
                p class="hint" id="decision-id-hint" { "The id shown with the decision, like 0b8f6c1e-…" }
                input type="text" id="decision-id" name="id" value=(id) aria-describedby="decision-id-hint" autocomplete="off" spellcheck="false";
            }
            button type="submit" { "Look up" }
        }
        @if let Some(d) = found {
            (decision(d, true, "The decision"))
            form method="post" action="/decisions/replay" {
                input type="hidden" name="_csrf" value=(csrf);
                input type="hidden" name="id" value=(d.decision_id);
                button type="submit" { "Replay with today's rules" }
            }
        }
    }
}

/// The sign-in page.
pub(crate) fn login(error: Option<&str>, csrf: &str) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(e) = error { (error_summary(&[(Some("token".into()), e.to_string())])) }
        p class="lead" { "This console is reachable from other computers, so it needs the caller or admin token the server was started with." }
        form method="post" action="/login" {
            input type="hidden" name="_csrf" value=(csrf);
            div class=(if error.is_some() { "field field-has-error" } else { "field" }) {
                label for="token" { "Access token" }
                p class="hint" id="token-hint" { "Ask whoever runs the server. It is not shown as you type." }
                @if let Some(e) = error { p class="field-error" id="token-error" { span class="visually-hidden" { "Error: " } (e) } }
                input type="password" id="token" name="token" autocomplete="current-password" aria-describedby=(if error.is_some() { "token-hint token-error" } else { "token-hint" }) aria-invalid=[error.map(|_| "true")];
            }
            button type="submit" { "Sign in" }
        }
    }
}

/// A plain message page (not found, expired form).
pub(crate) fn message(heading: &str, text: &str) -> Markup {
    html! { h1 { (heading) } p { (text) } p { a href="/" { "Go to the partnerships" } } }
}

/// The id of a field's input, for error summary links.
pub(crate) fn target(path: &str) -> Option<String> {
    (!path.is_empty()).then(|| field_id(path))
}
