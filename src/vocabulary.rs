//! The fact vocabulary: each decision kind's facts, their types, ranges and codes — as data.
//!
//! A policy lead adds a code (a new exclusion ground) or a decision kind of their own without a
//! Rust change, so the vocabulary cannot be compiled in. It is read from `rules/vocabulary.toml`
//! and extended by each partnership's `partnership.toml` (`[codes]` and `[custom_kinds]`), and
//! the result drives everything that looks at facts: validation of every request
//! ([`crate::facts`]), the static checks of scripts, test cases, the CLI and the generated
//! documentation. Parsing is strict (`deny_unknown_fields`) and every problem is reported.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

/// Most items accepted in any list fact unless the vocabulary says otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 64;
/// Longest text fact accepted unless the vocabulary says otherwise (characters).
pub const DEFAULT_MAX_TEXT: usize = 4000;

/// One code of a code list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CodeValue {
    /// The snake_case code requests and scripts use.
    pub code: String,
    /// How a person reads it (forms, the console).
    pub label: String,
}

/// A named list of codes (`role`, `exclusion_ground`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeList {
    /// The list's name.
    pub name: String,
    /// What the codes mean.
    pub doc: String,
    /// The codes, in order.
    pub values: Vec<CodeValue>,
}

impl CodeList {
    /// Whether `code` is in the list.
    pub fn contains(&self, code: &str) -> bool {
        self.values.iter().any(|v| v.code == code)
    }
    /// The codes alone.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| v.code.as_str())
    }
}

/// The type of one fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactType {
    /// `true` or `false`.
    Bool,
    /// A whole number within `min..=max`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// Free text of at most `max_len` characters.
    Text {
        /// Longest accepted (characters).
        max_len: usize,
    },
    /// One code of a code list.
    Code(Arc<CodeList>),
    /// A list of at most `max_items` values of one type.
    List {
        /// The items' type.
        item: Box<FactType>,
        /// Most items accepted.
        max_items: usize,
    },
    /// A nested object with its own facts, all of which must be given.
    Object(Vec<FactSpec>),
}

impl FactType {
    /// The type in words, for messages and generated documentation.
    pub fn describe(&self) -> String {
        match self {
            FactType::Bool => "true/false".into(),
            FactType::Int { min, max } => format!("whole number {min}–{max}"),
            FactType::Date => "date `YYYY-MM-DD`".into(),
            FactType::Text { max_len } => format!("text (at most {max_len} characters)"),
            FactType::Code(list) => format!("one of {}", list.codes().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")),
            FactType::List { item, max_items } => format!("list (at most {max_items}) of {}", item.describe()),
            FactType::Object(fields) => {
                format!("{{ {} }}", fields.iter().map(|f| format!("`{}`: {}", f.name, f.ty.describe())).collect::<Vec<_>>().join(", "))
            }
        }
    }

    /// A short name of the type, as scripts see values of it (`text`, `number`, …).
    pub fn script_type(&self) -> &'static str {
        match self {
            FactType::Bool => "true/false",
            FactType::Int { .. } => "number",
            FactType::Date | FactType::Text { .. } | FactType::Code(_) => "text",
            FactType::List { .. } => "list",
            FactType::Object(_) => "object",
        }
    }
}

/// A default the engine may supply for an absent fact. There is only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FactDefault {
    /// Today's date in England, supplied by the caller with the request.
    Today,
}

/// One named fact of a kind (or field of an object fact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactSpec {
    /// Field name, snake_case.
    pub name: String,
    /// Its type.
    pub ty: FactType,
    /// A short label for forms.
    pub label: String,
    /// What it means.
    pub help: String,
    /// The default, if any.
    pub default: Option<FactDefault>,
}

/// One decision kind: its outcomes and facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSchema {
    /// Kind name (`attendance`, …, or a partnership's own).
    pub name: String,
    /// What the kind decides.
    pub doc: String,
    /// Outcome codes a script for it may return.
    pub outcomes: Vec<String>,
    /// The facts it takes.
    pub facts: Vec<FactSpec>,
}

impl KindSchema {
    /// The fact called `name`, with its index.
    pub fn fact(&self, name: &str) -> Option<(usize, &FactSpec)> {
        self.facts.iter().enumerate().find(|(_, f)| f.name == name)
    }
}

/// A whole vocabulary: code lists and kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vocabulary {
    codes: BTreeMap<String, Arc<CodeList>>,
    kinds: BTreeMap<String, Arc<KindSchema>>,
}

// ------------------------------------------------------------------------------------------
// The file format
// ------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDe {
    #[serde(default)]
    codes: BTreeMap<String, CodesDe>,
    #[serde(default)]
    kinds: BTreeMap<String, KindDe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodesDe {
    doc: String,
    values: Vec<CodeValue>,
}

/// A kind as declared in `vocabulary.toml` or as a partnership's custom kind.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KindDe {
    /// What the kind decides.
    #[serde(default)]
    pub doc: String,
    /// Its outcome codes.
    pub outcomes: Vec<String>,
    /// Its facts.
    #[serde(default)]
    pub facts: Vec<FactDe>,
}

/// A fact as declared in a file.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FactDe {
    /// Field name.
    pub name: String,
    #[serde(flatten)]
    ty: TypeDe,
    /// Label for forms.
    #[serde(default)]
    pub label: Option<String>,
    /// What it means.
    #[serde(default)]
    pub help: Option<String>,
    /// `"today"` for a date that defaults to today.
    #[serde(default)]
    pub default: Option<FactDefault>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct TypeDe {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    max: Option<i64>,
    #[serde(default)]
    max_len: Option<usize>,
    #[serde(default)]
    codes: Option<String>,
    #[serde(default)]
    item: Option<Box<TypeDe>>,
    #[serde(default)]
    max_items: Option<usize>,
    #[serde(default)]
    fields: Option<Vec<FactDe>>,
}

/// A partnership's additions to the shared vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// Codes added to existing lists: list name → new codes.
    #[serde(default)]
    pub codes: BTreeMap<String, Vec<CodeValue>>,
    /// Kinds of the partnership's own.
    #[serde(default)]
    pub custom_kinds: BTreeMap<String, KindDe>,
}

/// A problem in a vocabulary file, with where it is when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VocabularyError {
    /// What is wrong.
    pub message: String,
    /// Byte span in the file, when known.
    pub span: Option<std::ops::Range<usize>>,
}

impl VocabularyError {
    fn msg(message: impl Into<String>) -> Self {
        VocabularyError { message: message.into(), span: None }
    }
}

fn is_snake(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

impl Vocabulary {
    /// Parses `vocabulary.toml`, reporting every problem.
    pub fn from_toml(text: &str) -> Result<Vocabulary, Vec<VocabularyError>> {
        let de: FileDe = toml::from_str(text).map_err(|e| vec![VocabularyError { message: e.message().to_string(), span: e.span() }])?;
        let mut errors = Vec::new();
        let mut v = Vocabulary::default();
        for (name, c) in de.codes {
            if !is_snake(&name) {
                errors.push(VocabularyError::msg(format!("code list `{name}` must be a snake_case name")));
            }
            check_codes(&name, &c.values, &mut errors);
            v.codes.insert(name.clone(), Arc::new(CodeList { name, doc: c.doc, values: c.values }));
        }
        for (name, k) in de.kinds {
            match v.resolve_kind(&name, &k) {
                Ok(schema) => {
                    v.kinds.insert(name, Arc::new(schema));
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() { Ok(v) } else { Err(errors) }
    }

    /// This vocabulary with a partnership's additions. Added codes join their list for this
    /// partnership only; a custom kind may use every list, including added codes.
    pub fn extend(&self, ext: &Extension) -> Result<Vocabulary, Vec<VocabularyError>> {
        let mut errors = Vec::new();
        let mut v = self.clone();
        for (list, added) in &ext.codes {
            let Some(existing) = v.codes.get(list) else {
                let hint = crate::suggest::did_you_mean(list, v.codes.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                errors.push(VocabularyError::msg(format!("[codes] names `{list}`, which is not a code list of vocabulary.toml{hint}")));
                continue;
            };
            let mut merged = (**existing).clone();
            for c in added {
                if merged.contains(&c.code) {
                    errors.push(VocabularyError::msg(format!("code `{}` is already in `{list}`", c.code)));
                } else {
                    merged.values.push(c.clone());
                }
            }
            check_codes(list, &merged.values, &mut errors);
            v.codes.insert(list.clone(), Arc::new(merged));
        }
        // Kinds whose facts use an extended list must see the extended list.
        let lists = v.codes.clone();
        for schema in v.kinds.values_mut() {
            let mut s = (**schema).clone();
            for f in &mut s.facts {
                relink(&mut f.ty, &lists);
            }
            *schema = Arc::new(s);
        }
        for (name, k) in &ext.custom_kinds {
            if v.kinds.contains_key(name) {
                errors.push(VocabularyError::msg(format!("`{name}` is already a decision kind; a partnership cannot redeclare it")));
                continue;
            }
            match v.resolve_kind(name, k) {
                Ok(schema) => {
                    v.kinds.insert(name.clone(), Arc::new(schema));
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() { Ok(v) } else { Err(errors) }
    }

    /// The kind called `name`.
    pub fn kind(&self, name: &str) -> Option<&Arc<KindSchema>> {
        self.kinds.get(name)
    }
    /// Every kind, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<KindSchema>> {
        self.kinds.values()
    }
    /// The code list called `name`.
    pub fn codes(&self, name: &str) -> Option<&Arc<CodeList>> {
        self.codes.get(name)
    }
    /// Every code list.
    pub fn code_lists(&self) -> impl Iterator<Item = &Arc<CodeList>> {
        self.codes.values()
    }

    fn resolve_kind(&self, name: &str, k: &KindDe) -> Result<KindSchema, Vec<VocabularyError>> {
        let mut errors = Vec::new();
        if !is_snake(name) {
            errors.push(VocabularyError::msg(format!("kind `{name}` must be a snake_case name")));
        }
        if k.outcomes.is_empty() {
            errors.push(VocabularyError::msg(format!("kind `{name}` needs at least one outcome")));
        }
        for o in &k.outcomes {
            if !is_snake(o) {
                errors.push(VocabularyError::msg(format!("outcome `{o}` of `{name}` must be a snake_case code")));
            }
        }
        let facts = self.resolve_facts(&format!("kinds.{name}"), &k.facts, &mut errors);
        if errors.is_empty() {
            Ok(KindSchema { name: name.to_string(), doc: k.doc.clone(), outcomes: k.outcomes.clone(), facts })
        } else {
            Err(errors)
        }
    }

    fn resolve_facts(&self, at: &str, facts: &[FactDe], errors: &mut Vec<VocabularyError>) -> Vec<FactSpec> {
        let mut out: Vec<FactSpec> = Vec::new();
        for f in facts {
            let here = format!("{at}.{}", f.name);
            if !is_snake(&f.name) {
                errors.push(VocabularyError::msg(format!("{here}: a fact name must be snake_case")));
            }
            if out.iter().any(|o| o.name == f.name) {
                errors.push(VocabularyError::msg(format!("{here}: declared twice")));
            }
            let Some(ty) = self.resolve_type(&here, &f.ty, errors) else { continue };
            if f.default == Some(FactDefault::Today) && ty != FactType::Date {
                errors.push(VocabularyError::msg(format!("{here}: only a date may default to \"today\"")));
            }
            out.push(FactSpec {
                name: f.name.clone(),
                ty,
                label: f.label.clone().unwrap_or_else(|| f.name.replace('_', " ")),
                help: f.help.clone().unwrap_or_default(),
                default: f.default,
            });
        }
        out
    }

    fn resolve_type(&self, at: &str, t: &TypeDe, errors: &mut Vec<VocabularyError>) -> Option<FactType> {
        let ty = match t.ty.as_str() {
            "bool" => FactType::Bool,
            "int" => match (t.min, t.max) {
                (Some(min), Some(max)) if min <= max => FactType::Int { min, max },
                _ => {
                    errors.push(VocabularyError::msg(format!("{at}: an int needs `min` and `max`, with min ≤ max")));
                    return None;
                }
            },
            "date" => FactType::Date,
            "text" => FactType::Text { max_len: t.max_len.unwrap_or(DEFAULT_MAX_TEXT) },
            "code" => {
                let Some(list) = &t.codes else {
                    errors.push(VocabularyError::msg(format!("{at}: a code fact needs `codes = \"<list name>\"`")));
                    return None;
                };
                match self.codes.get(list) {
                    Some(l) => FactType::Code(l.clone()),
                    None => {
                        let hint = crate::suggest::did_you_mean(list, self.codes.keys().map(String::as_str))
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        errors.push(VocabularyError::msg(format!("{at}: there is no code list `{list}`{hint}")));
                        return None;
                    }
                }
            }
            "list" => {
                let Some(item) = &t.item else {
                    errors.push(VocabularyError::msg(format!("{at}: a list needs `item = {{ type = … }}`")));
                    return None;
                };
                let item = self.resolve_type(&format!("{at}[]"), item, errors)?;
                FactType::List { item: Box::new(item), max_items: t.max_items.unwrap_or(DEFAULT_MAX_ITEMS) }
            }
            "object" => {
                let Some(fields) = &t.fields else {
                    errors.push(VocabularyError::msg(format!("{at}: an object needs `fields = [ … ]`")));
                    return None;
                };
                FactType::Object(self.resolve_facts(at, fields, errors))
            }
            other => {
                let known = ["bool", "int", "date", "text", "code", "list", "object"];
                let hint = crate::suggest::did_you_mean(other, known.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                errors.push(VocabularyError::msg(format!("{at}: `{other}` is not a fact type{hint}; use one of {}", known.join(", "))));
                return None;
            }
        };
        Some(ty)
    }
}

fn check_codes(list: &str, values: &[CodeValue], errors: &mut Vec<VocabularyError>) {
    for (i, c) in values.iter().enumerate() {
        if !is_snake(&c.code) {
            errors.push(VocabularyError::msg(format!("code `{}` in `{list}` must be snake_case (lower-case letters, digits, `_`)", c.code)));
        }
        if values[..i].iter().any(|p| p.code == c.code) {
            errors.push(VocabularyError::msg(format!("code `{}` appears twice in `{list}`", c.code)));
        }
    }
}

fn relink(ty: &mut FactType, lists: &BTreeMap<String, Arc<CodeList>>) {
    match ty {
        FactType::Code(l) => {
            if let Some(new) = lists.get(&l.name) {
                *l = new.clone();
            }
        }
        FactType::List { item, .. } => relink(item, lists),
        FactType::Object(fields) => fields.iter_mut().for_each(|f| relink(&mut f.ty, lists)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> Vocabulary {
        let text = include_str!("../rules/vocabulary.toml");
        Vocabulary::from_toml(text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn bundled_vocabulary_declares_the_six_kinds() {
        let v = bundled();
        let names: Vec<&str> = v.kinds().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["attendance", "child_invitation", "complaint_eligibility", "exclusion", "plan_type", "timescales"]);
    }

    #[test]
    fn a_partnership_adds_a_code_and_a_kind() {
        let v = bundled();
        let ext: Extension = toml::from_str(
            r#"
            [codes]
            exclusion_ground = [{ code = "under_the_influence", label = "Under the influence of alcohol or drugs" }]
            [custom_kinds.venue]
            outcomes = ["in_person", "online"]
            facts = [{ name = "distance_miles", type = "int", min = 0, max = 500 }, { name = "grounds", type = "list", item = { type = "code", codes = "exclusion_ground" } }]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let x = v.extend(&ext).unwrap_or_else(|e| panic!("{e:?}"));
        let excl = x.kind("exclusion").map(|k| k.facts[1].ty.clone());
        assert!(matches!(excl, Some(FactType::List { item, .. }) if matches!(&*item, FactType::Code(l) if l.contains("under_the_influence"))));
        assert!(x.kind("venue").is_some());
        // the shared vocabulary is untouched
        assert!(!v.codes("exclusion_ground").is_some_and(|l| l.contains("under_the_influence")));
    }

    #[test]
    fn reports_every_problem() {
        let errs = Vocabulary::from_toml(
            r#"
            [codes.x]
            doc = ""
            values = [{ code = "A b", label = "" }, { code = "a", label = "" }, { code = "a", label = "" }]
            [kinds.k]
            outcomes = []
            facts = [{ name = "n", type = "number" }, { name = "c", type = "code", codes = "y" }]
            "#,
        )
        .err()
        .unwrap_or_default();
        let text: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(text.iter().any(|t| t.contains("did you mean `code`") || t.contains("not a fact type")), "{text:#?}");
    }
}
