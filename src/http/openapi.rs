//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from the live rules.
//!
//! The response and error schemas are written here as data; the request bodies — one facts
//! schema per decision kind — come from the vocabulary of each live partnership, so a code a
//! partnership adds, or a kind of its own, appears in the document the moment its rules go
//! live. A kind whose facts are the same in every partnership gets one schema
//! (`Facts.<kind>`); a partnership's own variant gets `Facts.<partnership>.<kind>`. Each live
//! (partnership, kind) pair is listed as its own path, pointing at its schema; the templated
//! path documents the errors for unknown ones. `tests/http.rs` validates real responses against
//! these schemas.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::store::RuleStore;
use crate::vocabulary::{FactSpec, FactType, KindSchema};

/// A JSON Schema (2020-12) for one fact type.
pub(crate) fn fact_type_schema(ty: &FactType) -> Value {
    match ty {
        FactType::Bool => json!({"type": "boolean"}),
        FactType::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FactType::Date => json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}),
        FactType::Text { max_len } => json!({"type": "string", "maxLength": max_len}),
        FactType::Code(list) => json!({
            "type": "string",
            "enum": list.codes().collect::<Vec<_>>(),
            "description": list.values.iter().map(|v| format!("`{}`: {}", v.code, v.label)).collect::<Vec<_>>().join("; "),
        }),
        FactType::List { item, max_items } => json!({"type": "array", "items": fact_type_schema(item), "maxItems": max_items}),
        FactType::Object(fields) => object_schema(fields, true),
    }
}

fn object_schema(fields: &[FactSpec], all_required: bool) -> Value {
    let mut properties = Map::new();
    for f in fields {
        let mut s = fact_type_schema(&f.ty);
        if let Some(o) = s.as_object_mut() {
            o.insert("title".into(), Value::String(f.label.clone()));
            let help = match o.remove("description") {
                Some(Value::String(codes)) => format!("{} Codes: {codes}", f.help),
                _ => f.help.clone(),
            };
            o.insert("description".into(), Value::String(help));
        }
        properties.insert(f.name.clone(), s);
    }
    let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
    if all_required {
        schema["required"] = json!(fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>());
    }
    schema
}

/// The facts schema of a kind: an object of its facts, none required (a fact the rules read on
/// the way to a decision and that is missing is a 400 naming it).
pub(crate) fn facts_schema(kind: &KindSchema) -> Value {
    let mut s = object_schema(&kind.facts, false);
    s["description"] = Value::String(format!("The facts for `{}`: {} Give the facts the rules need; one they read and do not get is a 400 naming it.", kind.name, kind.doc));
    s
}

fn error_responses() -> Value {
    let e = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({
        "400": e("INVALID_ARGUMENT: the body is not a JSON object, or facts are invalid or missing; each bad field is named in a google.rpc.BadRequest."),
        "401": e("UNAUTHENTICATED: a caller token is configured and none (or a wrong one) was sent as `Authorization: Bearer`."),
        "403": e("PERMISSION_DENIED."),
        "404": e("NOT_FOUND: unknown partnership or kind, with did-you-mean and the known ids (google.rpc.ResourceInfo and ErrorInfo)."),
        "429": {
            "description": "RESOURCE_EXHAUSTED: the server is at its decision capacity; retry after the Retry-After header (seconds).",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
        "500": e("INTERNAL: the partnership's rules failed; no decision was made (the script's file, line and column are in ErrorInfo)."),
        "504": e("DEADLINE_EXCEEDED: the server's request timeout passed first."),
    })
}

fn decision_op(summary: String, facts_ref: &str, partnership: Option<&str>, kind: Option<&str>) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({"description": "The decision.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}}});
    let mut params = Vec::new();
    if partnership.is_none() {
        params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}, "description": "Partnership id, e.g. `york`."}));
    }
    if kind.is_none() {
        params.push(json!({"name": "kind", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}, "description": "Decision kind, e.g. `attendance`."}));
    }
    let op_id = match (partnership, kind) {
        (Some(p), Some(k)) => format!("decide_{}_{}", p.replace('-', "_"), k),
        _ => "decide".to_string(),
    };
    json!({
        "operationId": op_id,
        "summary": summary,
        "parameters": params,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": facts_ref}}}},
        "responses": responses,
    })
}

/// The whole document for the rules live in `store` now.
pub(crate) fn document(store: &RuleStore) -> Value {
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut paths = Map::new();
    paths.insert(
        "/v1/partnerships".into(),
        json!({"get": {
            "operationId": "listPartnerships",
            "summary": "Every live partnership: its revision, when it went live, its kinds, guides and last refused reload.",
            "responses": {
                "200": {"description": "The partnerships.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PartnershipList"}}}},
                "401": error_responses()["401"].clone(),
            },
        }}),
    );
    paths.insert(
        "/v1/partnerships/{id}/decisions/{kind}".into(),
        json!({"post": decision_op("Make one decision with a partnership's live rules. The body is the facts as a JSON object.".into(), "#/components/schemas/AnyFacts", None, None)}),
    );
    // One schema per kind where every partnership agrees, else one per partnership.
    let mut by_kind: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for id in store.ids() {
        let Some(loaded) = store.get(&id) else { continue };
        for k in loaded.set.kinds() {
            by_kind.entry(k.name.clone()).or_default().push((id.clone(), facts_schema(&k.schema)));
        }
    }
    for (kind, variants) in by_kind {
        let uniform = variants.windows(2).all(|w| w[0].1 == w[1].1);
        for (id, schema) in variants {
            let name = if uniform { format!("Facts.{kind}") } else { format!("Facts.{id}.{kind}") };
            let reference = format!("#/components/schemas/{name}");
            schemas.insert(name, schema);
            paths.insert(
                format!("/v1/partnerships/{id}/decisions/{kind}"),
                json!({"post": decision_op(format!("`{kind}` with {id}'s live rules."), &reference, Some(&id), Some(&kind))}),
            );
        }
    }
    let text = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let mut all = serde_json::from_value::<BTreeMap<String, Value>>(json!({
        "AnyFacts": {"type": "object", "description": "The facts: an object of named facts; see the kind's own `Facts.*` schema."},
        "Decision": {
            "type": "object",
            "description": "cpc.v1.Decision in the protobuf JSON mapping (every field printed).",
            "required": ["decisionId", "partnership", "kind", "outcome", "summary", "reasons", "actions", "rulesRevision", "decidedAt", "categories", "groundRoutes", "panelRecommendations", "caseRef", "asOfDefaulted"],
            "additionalProperties": false,
            "properties": {
                "decisionId": {"type": "string", "format": "uuid"},
                "partnership": text, "kind": text, "outcome": text, "summary": text,
                "reasons": {"type": "array", "items": {"$ref": "#/components/schemas/Reason"}},
                "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}},
                "rulesRevision": text,
                "decidedAt": {"type": "string", "format": "date-time"},
                "categories": strings,
                "groundRoutes": {"type": "array", "items": {"$ref": "#/components/schemas/GroundRoute"}},
                "panelRecommendations": strings,
                "caseRef": text,
                "asOfDefaulted": {"type": "string", "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"},
            },
        },
        "Reason": {"type": "object", "required": ["ruleId", "text", "citation"], "additionalProperties": false, "properties": {
            "ruleId": text, "text": text, "citation": {"$ref": "#/components/schemas/Citation"}}},
        "Citation": {"type": "object", "required": ["document", "section", "assumption"], "additionalProperties": false, "properties": {
            "document": text, "section": text, "assumption": {"type": "boolean"}}},
        "Action": {"type": "object", "required": ["code", "description", "dueDate", "responsible"], "additionalProperties": false, "properties": {
            "code": text, "description": text, "dueDate": {"type": "string", "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"}, "responsible": text}},
        "GroundRoute": {"type": "object", "required": ["index", "category", "route"], "additionalProperties": false, "properties": {
            "index": {"type": "integer", "minimum": 0}, "category": text, "route": text}},
        "PartnershipList": {"type": "object", "required": ["partnerships"], "additionalProperties": false, "properties": {
            "partnerships": {"type": "array", "items": {"$ref": "#/components/schemas/Partnership"}}}},
        "Partnership": {"type": "object", "required": ["id", "name", "revision", "kinds", "documents", "loadedAt"], "additionalProperties": false, "properties": {
            "id": text, "name": text, "revision": text,
            "kinds": {"type": "array", "items": {"type": "object", "required": ["name", "outcomes"], "additionalProperties": false, "properties": {"name": text, "outcomes": strings}}},
            "documents": {"type": "array", "items": {"type": "object", "required": ["title", "source", "sections"], "additionalProperties": false, "properties": {"title": text, "source": text, "sections": strings}}},
            "loadedAt": {"type": "string", "format": "date-time"},
            "lastFailure": {"type": "object", "required": ["at", "diagnostics"], "additionalProperties": false, "properties": {"at": {"type": "string", "format": "date-time"}, "diagnostics": strings}},
        }},
        "Error": {"type": "object", "required": ["error"], "additionalProperties": false, "properties": {"error": {
            "type": "object", "required": ["code", "status", "message", "details"], "additionalProperties": false,
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status."},
                "status": {"type": "string", "enum": ["INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "INTERNAL", "UNAVAILABLE", "OUT_OF_RANGE", "FAILED_PRECONDITION", "CANCELLED", "UNKNOWN", "ALREADY_EXISTS", "ABORTED", "UNIMPLEMENTED", "DATA_LOSS"]},
                "message": text,
                "details": {"type": "array", "items": {"type": "object", "required": ["@type"], "properties": {"@type": text}}},
            },
        }}},
    }))
    .unwrap_or_default();
    all.extend(schemas);
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "cpc-rules decisions over HTTP",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Decisions about child protection conferences, made by each partnership's live rules. The same decisions, codes and error details as the gRPC service `cpc.v1.DecisionService`. Send `Authorization: Bearer <caller token>` when the server has one configured.",
        },
        "paths": paths,
        "components": {
            "schemas": all,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "The caller (or admin) token, when the server has one configured."}},
        },
        "security": [{}, {"bearer": []}],
    })
}
