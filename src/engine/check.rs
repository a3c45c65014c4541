//! Static checks of a compiled script, against the rule set and its vocabulary.
//!
//! A policy lead's mistake should be caught where it was made, before any test runs: a helper
//! that does not exist, an outcome, section, action code or responsible party the rule set does
//! not know, a fact the kind does not have, a comparison of a fact with a code it can never
//! hold, or a constant of the wrong type compared with a fact. Every problem is reported, each
//! at its file, line and column with a hint, and the checker also records which facts a
//! script reads, for the documentation of what each call needs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rhai::{AST, ASTNode, Expr, Position, Stmt};

use super::diagnostics::Diagnostic;
use super::sources::{ActionCatalogue, SourceFile};
use crate::suggest::did_you_mean;
use crate::vocabulary::{FactType, KindSchema};

/// Names callable from any script without being helpers (Rhai's intrinsics).
pub(super) const INTRINSICS: &[&str] =
    &["print", "debug", "type_of", "Fn", "call", "curry", "is_def_var", "is_def_fn", "is_shared", "throw"];

/// A literal's type, as far as the checker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit {
    Text,
    Number,
    Bool,
}

impl Lit {
    fn name(self) -> &'static str {
        match self {
            Lit::Text => "text",
            Lit::Number => "number",
            Lit::Bool => "true/false",
        }
    }
}

pub(super) struct Checker<'a> {
    pub(super) file: &'a SourceFile,
    pub(super) schema: &'a KindSchema,
    pub(super) known_fns: &'a BTreeSet<String>,
    pub(super) sections: &'a HashMap<String, String>,
    pub(super) actions: &'a ActionCatalogue,
    pub(super) documents: &'a [crate::model::GuidanceDocument],
    pub(super) partnership: &'a str,
    /// The facts each shared function reads, itself or through the shared functions it calls
    /// ([`shared_fact_reads`]): a script that calls one reads them too.
    pub(super) shared_reads: &'a BTreeMap<String, BTreeSet<String>>,
}

/// The topic segment a rule id of each built-in kind may use (`york.plan.first-review`); a
/// partnership's own kind uses its name.
const TOPICS: &[&str] = &["attendance", "exclusion", "child", "plan", "complaint", "timescales"];

impl Checker<'_> {
    /// Checks `ast`, adding every problem to `diags`; returns the facts the script reads.
    pub(super) fn check(&self, ast: &AST, diags: &mut Vec<Diagnostic>) -> Vec<String> {
        let local_fns: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        let consts = top_level_constants(ast);
        let aliases = fact_aliases(ast);
        let mut reads = BTreeSet::new();
        ast.walk(&mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(call, pos))) if call.namespace.is_empty() => {
                    self.add_shared_reads(call.name.as_str(), &mut reads);
                    if call.op_token.is_none() {
                        self.check_call(call.name.as_str(), &call.args, *pos, &local_fns, diags);
                    }
                    self.check_comparison(call.name.as_str(), &call.args, &consts, &aliases, diags);
                }
                Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) if call.op_token.is_none() && call.namespace.is_empty() => {
                    self.add_shared_reads(call.name.as_str(), &mut reads);
                    self.check_call(call.name.as_str(), &call.args, *pos, &local_fns, diags);
                }
                Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => {
                    if !self.known_fns.contains(call.name.as_str()) && !local_fns.contains(call.name.as_str()) {
                        self.unknown_fn(call.name.as_str(), *pos, &local_fns, diags);
                    }
                }
                Some(ASTNode::Expr(Expr::Dot(bin, _, _))) => {
                    // `grounds.contains("code")` where `let grounds = facts.grounds;`
                    if let Expr::Variable(v, _, _) = &bin.lhs {
                        if let Some(fact) = aliases.get(v.1.as_str()) {
                            if let Expr::MethodCall(call, _) = &bin.rhs {
                                if let (true, [Expr::StringConstant(code, p)]) = (call.name.as_str() == "contains", call.args.as_ref()) {
                                    self.check_code(fact, code, *p, true, diags);
                                }
                            }
                        }
                    }
                    if let Some((name, pos)) = fact_of(&bin.lhs, &bin.rhs) {
                        if self.check_fact(&name, pos, diags) {
                            reads.insert(name.clone());
                            self.check_method_on_fact(&name, &bin.rhs, diags);
                        }
                    }
                }
                Some(ASTNode::Expr(Expr::Index(bin, _, _))) => {
                    if let (Expr::Variable(v, _, _), Expr::StringConstant(s, pos)) = (&bin.lhs, &bin.rhs) {
                        if v.1.as_str() == "facts" && self.check_fact(s, *pos, diags) {
                            reads.insert(s.to_string());
                        }
                    }
                }
                _ => {}
            }
            true
        });
        reads.into_iter().collect()
    }

    fn unknown_fn(&self, name: &str, pos: Position, local: &BTreeSet<String>, diags: &mut Vec<Diagnostic>) {
        let candidates = super::helpers::HELPERS
            .iter()
            .map(|h| h.name)
            .chain(local.iter().map(String::as_str))
            .chain(self.known_fns.iter().map(String::as_str));
        let help = did_you_mean(name, candidates).map(|s| format!("did you mean `{s}`?"));
        diags.push(Diagnostic::rhai("unknown-helper", self.file, pos, format!("there is no helper or function called `{name}`")).with_help_opt(help));
    }

    fn check_call(&self, name: &str, args: &[Expr], pos: Position, local: &BTreeSet<String>, diags: &mut Vec<Diagnostic>) {
        if name.chars().next().is_some_and(|c| !c.is_alphabetic() && c != '_') {
            return;
        }
        if !self.known_fns.contains(name) && !local.contains(name) {
            self.unknown_fn(name, pos, local, diags);
            return;
        }
        if let ("reason" | "assumption", [Expr::StringConstant(id, p), ..]) = (name, args) {
            if !self.rule_id_ok(id) {
                diags.push(
                    Diagnostic::rhai("rule-id", self.file, *p, format!("rule id `{id}` does not follow `{}.<topic>.<name>`", self.partnership)).with_help(format!(
                        "start it with `{}.` and one of: {}{} (e.g. `{}.{}.my-rule`)",
                        self.partnership,
                        TOPICS.join(", "),
                        if TOPICS.contains(&self.schema.name.as_str()) { String::new() } else { format!(", {}", self.schema.name) },
                        self.partnership,
                        TOPICS.iter().find(|t| self.schema.name.starts_with(**t)).unwrap_or(&self.schema.name.as_str()),
                    )),
                );
            }
        }
        let outcomes = &self.schema.outcomes;
        match (name, args) {
            ("decide", [Expr::StringConstant(outcome, p), ..]) if !outcomes.iter().any(|o| o == outcome.as_str()) => {
                let help = did_you_mean(outcome, outcomes.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("`{}` outcomes are: {}", self.schema.name, outcomes.join(", ")));
                diags.push(Diagnostic::rhai("unknown-outcome", self.file, *p, format!("`{outcome}` is not an outcome of `{}`", self.schema.name)).with_help(help));
            }
            ("reason", [_, Expr::StringConstant(section, p), ..]) if self.uncovered(section).is_some() => {
                let doc = self.uncovered(section).unwrap_or_default();
                diags.push(
                    Diagnostic::rhai(
                        "uncovered-topic",
                        self.file,
                        *p,
                        format!("`{doc}` does not cover `{}`, so a reason here cannot rest on it", self.schema.name),
                    )
                    .with_help("use assumption(…) and say what is assumed where the guide is silent (or add the kind to the document's `covers` in partnership.toml)"),
                );
            }
            ("reason" | "assumption", [_, Expr::StringConstant(section, p), ..]) if !self.sections.contains_key(section.as_str()) => {
                let help = did_you_mean(section, self.sections.keys().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "cite a section heading listed under [[documents]] in partnership.toml".into());
                diags.push(Diagnostic::rhai("unknown-section", self.file, *p, format!("section `{section}` is not listed in partnership.toml")).with_help(help));
            }
            ("action", [first, rest @ ..]) => {
                if let Expr::StringConstant(code, p) = first {
                    if !self.actions.codes.contains_key(code.as_str()) {
                        let help = did_you_mean(code, self.actions.codes.keys().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| "add new action codes to rules/actions.toml".into());
                        diags.push(Diagnostic::rhai("unknown-action", self.file, *p, format!("action code `{code}` is not listed in actions.toml")).with_help(help));
                    }
                }
                if let Some(Expr::StringConstant(who, p)) = rest.last() {
                    if !self.actions.responsible.is_empty() && !self.actions.responsible.contains_key(who.as_str()) {
                        let help = did_you_mean(who, self.actions.responsible.keys().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"))
                            .unwrap_or_else(|| "add who is responsible under [responsible] in rules/actions.toml".into());
                        diags.push(
                            Diagnostic::rhai("unknown-responsible", self.file, *p, format!("`{who}` is not listed under [responsible] in actions.toml")).with_help(help),
                        );
                    }
                }
            }
            ("contains", [target, Expr::StringConstant(code, p)]) => {
                // `"code" in facts.list`
                if let Expr::Dot(bin, _, _) = target {
                    if let Some((fact, _)) = fact_of(&bin.lhs, &bin.rhs) {
                        self.check_code(&fact, code, *p, true, diags);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether a rule id is `<partnership>.<topic>.<name>` with a known topic.
    fn rule_id_ok(&self, id: &str) -> bool {
        let mut parts = id.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(topic), Some(name)) => {
                p == self.partnership && (TOPICS.contains(&topic) || topic == self.schema.name) && !name.is_empty()
            }
            _ => false,
        }
    }

    /// The title of the document `section` belongs to, when that document declares the kinds
    /// it covers and this script's kind is not among them.
    fn uncovered(&self, section: &str) -> Option<String> {
        let doc = self.documents.iter().find(|d| d.sections.iter().any(|s| s == section))?;
        let covers = doc.covers.as_ref()?;
        (!covers.iter().any(|k| *k == self.schema.name)).then(|| doc.title.clone())
    }

    /// Whether `name` is a fact of the kind; reports it when not.
    /// The facts of this kind that the shared function `name` reads, if it is one.
    fn add_shared_reads(&self, name: &str, reads: &mut BTreeSet<String>) {
        if let Some(facts) = self.shared_reads.get(name) {
            reads.extend(facts.iter().filter(|f| self.schema.fact(f).is_some()).cloned());
        }
    }

    fn check_fact(&self, name: &str, pos: Position, diags: &mut Vec<Diagnostic>) -> bool {
        if self.schema.fact(name).is_some() {
            return true;
        }
        let names = || self.schema.facts.iter().map(|s| s.name.as_str());
        let help = did_you_mean(name, names())
            .map(|s| format!("did you mean `facts.{s}`?"))
            .unwrap_or_else(|| format!("`{}` facts are: {} (declare new facts in the vocabulary)", self.schema.name, names().collect::<Vec<_>>().join(", ")));
        diags.push(Diagnostic::rhai("unknown-fact", self.file, pos, format!("`{name}` is not a fact of `{}`", self.schema.name)).with_help(help));
        false
    }

    /// `facts.list.contains("code")` with a code the list can never hold.
    fn check_method_on_fact(&self, fact: &str, rhs: &Expr, diags: &mut Vec<Diagnostic>) {
        let Expr::Dot(b, _, _) = rhs else { return };
        if let Expr::MethodCall(call, _) = &b.rhs {
            if call.name.as_str() == "contains" {
                if let [Expr::StringConstant(code, p)] = call.args.as_ref() {
                    self.check_code(fact, code, *p, true, diags);
                }
            }
        }
    }

    /// A code compared with (or looked for in) a code fact must be one of its list.
    fn check_code(&self, fact: &str, code: &str, pos: Position, in_list: bool, diags: &mut Vec<Diagnostic>) {
        let Some((_, spec)) = self.schema.fact(fact) else { return };
        let list = match (&spec.ty, in_list) {
            (FactType::Code(l), false) => l,
            (FactType::List { item, .. }, true) => match &**item {
                FactType::Code(l) => l,
                _ => return,
            },
            _ => return,
        };
        if list.contains(code) {
            return;
        }
        let help = did_you_mean(code, list.codes()).map(|s| format!("did you mean `{s}`?")).unwrap_or_else(|| {
            format!("`{}` codes are: {} (a partnership adds a code under [codes] in partnership.toml)", list.name, list.codes().collect::<Vec<_>>().join(", "))
        });
        diags.push(
            Diagnostic::rhai("unknown-code", self.file, pos, format!("`facts.{fact}` can never be `{code}`: it is not a `{}` code", list.name)).with_help(help),
        );
    }

    /// Comparisons between a fact and a literal or a constant: the types must agree, and a
    /// code must be one the fact can hold.
    fn check_comparison(
        &self,
        op: &str,
        args: &[Expr],
        consts: &BTreeMap<String, (Lit, Position)>,
        aliases: &BTreeMap<String, String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        if !matches!(op, "==" | "!=" | "<" | ">" | "<=" | ">=" | "contains") {
            return;
        }
        let [a, b] = args else { return };
        // `"code" in list` where `let list = facts.list;`
        if op == "contains" {
            if let (Expr::Variable(v, _, _), Expr::StringConstant(code, p)) = (a, b) {
                if let Some(fact) = aliases.get(v.1.as_str()) {
                    self.check_code(fact, code, *p, true, diags);
                }
            }
            return;
        }
        for (fact_side, other) in [(a, b), (b, a)] {
            let fact = match fact_side {
                Expr::Dot(bin, _, _) if matches!(bin.rhs, Expr::Property(..)) => match fact_of(&bin.lhs, &bin.rhs) {
                    Some((fact, _)) => fact,
                    None => continue,
                },
                Expr::Variable(v, _, _) => match aliases.get(v.1.as_str()) {
                    Some(fact) => fact.clone(),
                    None => continue,
                },
                _ => continue,
            };
            let Some((_, spec)) = self.schema.fact(&fact) else { continue };
            let (lit, pos, what) = match other {
                Expr::StringConstant(s, p) => {
                    if matches!(op, "==" | "!=") {
                        self.check_code(&fact, s, *p, false, diags);
                    }
                    (Lit::Text, *p, format!("\"{s}\""))
                }
                Expr::IntegerConstant(i, p) => (Lit::Number, *p, i.to_string()),
                Expr::BoolConstant(v, p) => (Lit::Bool, *p, v.to_string()),
                Expr::Variable(v, _, p) => match consts.get(v.1.as_str()) {
                    Some((lit, _)) => (*lit, *p, format!("the constant `{}`", v.1)),
                    None => continue,
                },
                _ => continue,
            };
            let expected = match spec.ty {
                FactType::Bool => Lit::Bool,
                FactType::Int { .. } => Lit::Number,
                FactType::Date | FactType::Text { .. } | FactType::Code(_) => Lit::Text,
                _ => continue,
            };
            if lit != expected {
                diags.push(
                    Diagnostic::rhai(
                        "type-mismatch",
                        self.file,
                        pos,
                        format!("`facts.{fact}` is {} but is compared with {what}, which is {}", expected.name(), lit.name()),
                    )
                    .with_help(match (expected, lit) {
                        (Lit::Number, Lit::Text) => "write the number without quotes, e.g. `const OLDER_CHILD_AGE = 12;`".to_string(),
                        (Lit::Text, _) => "write the code in quotes, e.g. \"parent\"".to_string(),
                        _ => format!("compare it with {}", expected.name()),
                    }),
                );
            }
        }
    }
}

/// `facts.<name>…` → the fact's name and position.
/// The facts each shared function reads (`facts.x` or `facts["x"]` in its body), together with
/// those read by the shared functions it calls, however deep. A kind's script that calls a shared
/// function reads them too, so the table of the facts each call needs stays right when a
/// decision tree lives in `shared/`.
pub(super) fn shared_fact_reads<'a>(asts: impl IntoIterator<Item = &'a AST>) -> BTreeMap<String, BTreeSet<String>> {
    let mut direct: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for ast in asts {
        for f in ast.iter_fn_def() {
            // Each function walked alone (rhai's `clone_functions_only_filtered` does not filter
            // into an empty module, so it cannot be used for this).
            let mut module = rhai::Module::new();
            module.set_script_fn(f.clone());
            let only = AST::new(Vec::new(), module);
            let (reads, calls) = direct.entry(f.name.to_string()).or_default();
            only.walk(&mut |path: &[ASTNode]| {
                match path.last() {
                    Some(ASTNode::Expr(Expr::Dot(bin, _, _))) => {
                        if let Some((fact, _)) = fact_of(&bin.lhs, &bin.rhs) {
                            reads.insert(fact);
                        }
                    }
                    Some(ASTNode::Expr(Expr::Index(bin, _, _))) => {
                        if let (Expr::Variable(v, _, _), Expr::StringConstant(s, _)) = (&bin.lhs, &bin.rhs) {
                            if v.1.as_str() == "facts" {
                                reads.insert(s.to_string());
                            }
                        }
                    }
                    Some(ASTNode::Expr(Expr::FnCall(call, _))) => {
                        calls.insert(call.name.to_string());
                    }
                    Some(ASTNode::Stmt(Stmt::FnCall(call, _))) => {
                        calls.insert(call.name.to_string());
                    }
                    _ => {}
                }
                true
            });
        }
    }
    direct
        .keys()
        .map(|name| {
            let (mut seen, mut stack, mut reads) = (BTreeSet::new(), vec![name.as_str()], BTreeSet::new());
            while let Some(n) = stack.pop() {
                if seen.insert(n) {
                    if let Some((r, c)) = direct.get(n) {
                        reads.extend(r.iter().cloned());
                        stack.extend(c.iter().map(String::as_str));
                    }
                }
            }
            (name.clone(), reads)
        })
        .collect()
}

fn fact_of(lhs: &Expr, rhs: &Expr) -> Option<(String, Position)> {
    let Expr::Variable(v, _, _) = lhs else { return None };
    if v.1.as_str() != "facts" {
        return None;
    }
    match rhs {
        Expr::Property(p, pos) => Some((p.2.to_string(), *pos)),
        Expr::Index(b, _, _) | Expr::Dot(b, _, _) => match &b.lhs {
            Expr::Property(p, pos) => Some((p.2.to_string(), *pos)),
            _ => None,
        },
        _ => None,
    }
}

/// `let x = facts.y;` (or `const`) anywhere in a script: `x` stands for the fact `y`, so what is
/// checked on `facts.y` is checked on `x` too.
fn fact_aliases(ast: &AST) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(x, _, _))) = path.last() {
            if let Expr::Dot(bin, _, _) = &x.1 {
                if let (Some((fact, _)), Expr::Property(..)) = (fact_of(&bin.lhs, &bin.rhs), &bin.rhs) {
                    out.insert(x.0.name.to_string(), fact);
                }
            }
        }
        true
    });
    out
}

/// `const NAME = <literal>;` at the top of a script.
fn top_level_constants(ast: &AST) -> BTreeMap<String, (Lit, Position)> {
    let mut out = BTreeMap::new();
    for stmt in ast.statements() {
        if let Stmt::Var(x, options, pos) = stmt {
            if options.contains(rhai::ASTFlags::CONSTANT) {
                let lit = match &x.1 {
                    Expr::StringConstant(..) => Some(Lit::Text),
                    Expr::IntegerConstant(..) => Some(Lit::Number),
                    Expr::BoolConstant(..) => Some(Lit::Bool),
                    _ => None,
                };
                if let Some(lit) = lit {
                    out.insert(x.0.name.to_string(), (lit, *pos));
                }
            }
        }
    }
    out
}
