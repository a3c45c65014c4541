//! Building a [`RuleSet`] from its sources: parse the data files, build the engine, compile
//! every script once, check it, and collect every problem found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use rhai::{AST, Map, Scope};

use super::check::{Checker, INTRINSICS};
use super::diagnostics::Diagnostic;
use super::ruleset::{CompiledKind, KindInfo, RuleSet};
use super::script_types::ResultContext;
use super::sources::{ActionCatalogue, Metadata, RuleSources, SourceFile};
use super::{Limits, build_engine};
use crate::calendar::Calendar;
use crate::suggest::did_you_mean;
use crate::vocabulary::{Extension, Vocabulary};

fn toml_diag(file: &SourceFile, e: &toml::de::Error) -> Diagnostic {
    match e.span() {
        Some(span) => Diagnostic::at_offset("toml", file, span.start, e.message()),
        None => Diagnostic::whole_file("toml", file.path.clone(), e.message()),
    }
}

fn parse_diag(file: &SourceFile, e: &rhai::ParseError) -> Diagnostic {
    super::syntax_help::diagnose(file, e)
}

impl RuleSet {
    /// Compiles and checks a partnership's sources. Returns every problem found, not just the
    /// first: malformed data files, syntax errors in each script, and every static check.
    pub fn compile(src: &RuleSources, limits: &Limits) -> Result<RuleSet, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let meta = match toml::from_str::<Metadata>(&src.metadata.text) {
            Ok(m) => Some(m),
            Err(e) => {
                diags.push(toml_diag(&src.metadata, &e));
                None
            }
        };
        if let Some(m) = &meta {
            if m.id != src.id {
                diags.push(Diagnostic::whole_file("metadata", src.metadata.path.clone(), format!("id `{}` does not match the folder name `{}`", m.id, src.id)));
            }
            if m.documents.is_empty() || m.documents.iter().any(|d| d.sections.is_empty()) {
                diags.push(Diagnostic::whole_file("metadata", src.metadata.path.clone(), "every partnership needs at least one document with its section headings"));
            }
        }
        let calendar = match Calendar::from_toml(&src.calendar.text) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                diags.push(Diagnostic::whole_file("calendar", src.calendar.path.clone(), e.to_string()));
                None
            }
        };
        let actions = match toml::from_str::<ActionCatalogue>(&src.actions.text) {
            Ok(a) => Some(a),
            Err(e) => {
                diags.push(toml_diag(&src.actions, &e));
                None
            }
        };
        let shared_vocabulary = match Vocabulary::from_toml(&src.vocabulary.text) {
            Ok(v) => Some(v),
            Err(errors) => {
                diags.extend(errors.into_iter().map(|e| match e.span {
                    Some(s) => Diagnostic::at_offset("vocabulary", &src.vocabulary, s.start, e.message),
                    None => Diagnostic::whole_file("vocabulary", src.vocabulary.path.clone(), e.message),
                }));
                None
            }
        };
        let vocabulary = match (&meta, shared_vocabulary) {
            (Some(m), Some(v)) => {
                let ext = Extension { codes: m.codes.clone(), custom_kinds: m.custom_kinds.clone() };
                match v.extend(&ext) {
                    Ok(v) => Some(v),
                    Err(errors) => {
                        diags.extend(errors.into_iter().map(|e| Diagnostic::whole_file("vocabulary", src.metadata.path.clone(), e.message)));
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(v) = &vocabulary {
            for kind in crate::facts::Kind::ALL {
                let declared = v.kind(kind.as_str()).map(|k| k.outcomes.clone()).unwrap_or_default();
                if declared != kind.outcomes() {
                    diags.push(
                        Diagnostic::whole_file(
                            "vocabulary",
                            src.vocabulary.path.clone(),
                            format!("`{}` must declare exactly the contract's outcomes: {}", kind.as_str(), kind.outcomes().join(", ")),
                        )
                        .with_help("outcome codes of the six built-in kinds are part of the API; a new outcome needs a new kind (custom_kinds)"),
                    );
                }
            }
        }
        let (Some(meta), Some(calendar), Some(actions), Some(vocabulary)) = (meta, calendar, actions, vocabulary) else {
            return Err(diags);
        };

        let (first, last) = calendar.range();
        let dates = NaiveDate::from_ymd_opt(first, 1, 1).unwrap_or(NaiveDate::MIN)..=NaiveDate::from_ymd_opt(last, 12, 31).unwrap_or(NaiveDate::MAX);
        let mut sections = HashMap::new();
        for d in &meta.documents {
            for s in &d.sections {
                sections.insert(s.clone(), d.title.clone());
            }
        }
        let sections = Arc::new(sections);
        let actions = Arc::new(actions);

        let mut engine = build_engine(limits);
        // Checked as written: nothing is folded or removed before the static checks see it.
        engine.set_optimization_level(rhai::OptimizationLevel::None);
        super::helpers::register(&mut engine, calendar);
        super::script_types::register(&mut engine, ResultContext { sections: sections.clone(), actions: actions.clone() });
        let mut compile_scope = Scope::new();
        // A variable, not a constant: the optimiser must not fold any value into the scripts.
        compile_scope.push("facts", Map::new());

        // Shared functions: each file compiled once into a global module every script can call
        // (one module per file, so an error in a shared function names its own file).
        let mut shared_fns = BTreeSet::new();
        let mut shared_asts: Vec<(&SourceFile, AST)> = Vec::new();
        for file in &src.shared {
            match engine.compile(&file.text) {
                Ok(mut ast) => {
                    if let Some(stmt) = ast.statements().first() {
                        diags.push(Diagnostic::rhai("shared-statement", file, stmt.position(), "shared files may only define functions").with_help(
                            "move this statement into a function (`fn name(…) { … }`) or into the partnership's own script",
                        ));
                    }
                    ast.set_source(file.path.as_str());
                    diags.extend(super::sandbox::check_ast(file, &ast));
                    shared_fns.extend(ast.iter_functions().map(|f| f.name.to_string()));
                    shared_asts.push((file, ast));
                }
                Err(e) => diags.push(parse_diag(file, &e)),
            }
        }
        for (file, ast) in &shared_asts {
            match rhai::Module::eval_ast_as_new(Scope::new(), ast, &engine) {
                Ok(mut module) => {
                    module.set_id(file.path.as_str());
                    engine.register_global_module(module.into());
                }
                Err(e) => diags.push(Diagnostic::whole_file("shared", file.path.clone(), e.to_string())),
            }
        }

        let shared_reads = super::check::shared_fact_reads(shared_asts.iter().map(|(_, ast)| ast));
        let mut known_fns: BTreeSet<String> =
            engine.gen_fn_signatures(true).into_iter().filter_map(|s| s.split('(').next().map(|n| n.trim().to_string())).collect();
        known_fns.extend(shared_fns);
        known_fns.extend(INTRINSICS.iter().map(|s| s.to_string()));

        let mut kinds = BTreeMap::new();
        for file in &src.scripts {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path).trim_end_matches(".rhai").to_string();
            let Some(schema) = vocabulary.kind(&name).cloned() else {
                let known: Vec<&str> = vocabulary.kinds().map(|k| k.name.as_str()).collect();
                diags.push(
                    Diagnostic::whole_file("unknown-kind", file.path.clone(), format!("`{name}` is not a decision kind"))
                        .with_help(match did_you_mean(&name, known.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`? Otherwise declare a new kind under [custom_kinds.{name}] in partnership.toml"),
                            None => format!("declare a new kind under [custom_kinds.{name}] in partnership.toml, with its outcomes and facts"),
                        }),
                );
                continue;
            };
            match engine.compile_with_scope(&compile_scope, &file.text) {
                Ok(mut ast) => {
                    ast.set_source(file.path.as_str());
                    let checker = Checker { file, schema: &schema, known_fns: &known_fns, sections: &sections, actions: &actions, documents: &meta.documents, partnership: &meta.id, shared_reads: &shared_reads };
                    let before = diags.len();
                    let reads = checker.check(&ast, &mut diags);
                    diags.extend(super::sandbox::check_ast(file, &ast));
                    if diags.len() == before {
                        // Checked as written; run with constants folded and the pure helpers'
                        // calls on constant arguments made once, here, rather than per decision.
                        // Every test case still runs against this AST before the set goes live.
                        let mut ast = engine.optimize_ast(&compile_scope, ast, rhai::OptimizationLevel::Full);
                        ast.set_source(file.path.as_str());
                        let info = KindInfo { name: name.clone(), file: file.path.clone(), schema, reads };
                        kinds.insert(name, CompiledKind::new(info, ast));
                    }
                }
                Err(e) => diags.push(parse_diag(file, &e)),
            }
        }
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(RuleSet {
            revision: src.revision(),
            meta,
            engine,
            kinds,
            actions,
            vocabulary: Arc::new(vocabulary),
            dates,
            limits: limits.clone(),
        })
    }
}
