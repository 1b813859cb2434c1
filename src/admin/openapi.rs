//! `GET /api/v1/openapi.json`: the admin API as an OpenAPI 3.1 document. The paths are
//! written here; every body's schema is derived (schemars, JSON Schema 2020-12) from the
//! type the handler serializes or parses, so a field added to an answer is in the
//! document by construction. `tests/openapi.rs` calls every operation and checks each
//! answer against this document.

use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Value};

use super::bodies::{
    Audit, Diffs, ErrorBody, NotPersisted, PercentBody, PromoteBody, PushBody, PushRefused,
    ReasonBody, ReloadRefused, Reloaded, Tables,
};
use super::explain::Explanation;
use super::status::Status;
use crate::control::history::HistoryDoc;
use crate::control::store::FleetView;
use crate::control::tables::{Pushed, Table};
use crate::control::Outcome;

/// Built once: the document does not change while the process runs.
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

struct Schemas(SchemaGenerator);

impl Schemas {
    fn of<T: JsonSchema>(&mut self) -> Value {
        self.0.subschema_for::<T>().to_value()
    }
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn answer(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

fn text_answer(description: &str, media: &str) -> Value {
    json!({ "description": description, "content": { media: { "schema": { "type": "string" } } } })
}

/// The refusals every `/api/` operation may answer with.
fn refusals(s: &mut Schemas, post: bool, extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let err = s.of::<ErrorBody>();
    out.insert(
        "401".into(),
        answer(
            "A token is configured and the request lacks it.",
            err.clone(),
        ),
    );
    out.insert(
        "403".into(),
        answer(
            "No token is configured and the request came from another site or through another host name.",
            err.clone(),
        ),
    );
    if post {
        out.insert(
            "415".into(),
            answer(
                "No token is configured and the change is not `application/json`.",
                err.clone(),
            ),
        );
    }
    for (code, why) in extra {
        out.insert((*code).into(), answer(why, err.clone()));
    }
    out
}

fn with(mut base: serde_json::Map<String, Value>, more: Value) -> Value {
    if let Value::Object(m) = more {
        base.extend(m);
    }
    Value::Object(base)
}

fn route_name() -> Value {
    json!({ "name": "name", "in": "path", "required": true, "schema": { "type": "string" },
            "description": "The route's name, as in its route file." })
}

fn direct() -> Value {
    json!({ "name": "direct", "in": "query", "schema": { "type": "boolean" },
            "description": "Apply on this replica alone, without the shared store (the emergency path of `banyan rollback --direct`); shared with the fleet once the store can be reached, unless it changed there meanwhile." })
}

fn table_number() -> Value {
    json!({ "name": "number", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 1 },
            "description": "The table's number, as `banyan history` lists it." })
}

pub fn document() -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut s = Schemas(SchemaGenerator::new(settings));
    let outcome = s.of::<Outcome>();
    let ramp_moved = answer(
        "What the ramp did (500: in force here, but `state/ramps.json` could not keep it).",
        s.of::<crate::control::ramp::RampOutcome>(),
    );
    let not_persisted = answer(
        "In force in this process, but `overrides.json` could not be written.",
        s.of::<NotPersisted>(),
    );
    let changed = answer(
        "Done: the override changes, with each route's percent before and after.",
        outcome,
    );
    let reason_body = json!({ "required": false, "content": json_content(s.of::<ReasonBody>()) });
    let percent_body = json!({ "required": true, "content": json_content(s.of::<PercentBody>()) });

    let paths = json!({
        "/healthz": { "get": {
            "operationId": "healthz", "summary": "Liveness and readiness", "security": [],
            "responses": {
                "200": text_answer("Serving.", "text/plain"),
                "503": text_answer("Still starting.", "text/plain")
            }
        }},
        "/metrics": { "get": {
            "operationId": "metrics", "summary": "Prometheus metrics", "security": [],
            "responses": { "200": text_answer("The Prometheus text format.", "text/plain") }
        }},
        "/": { "get": {
            "operationId": "dashboard", "summary": "The migration dashboard (reads /api/ with the token)",
            "security": [],
            "responses": { "200": text_answer("The dashboard's page.", "text/html") }
        }},
        "/api/v1/status": { "get": {
            "operationId": "status", "summary": "What the proxy is doing now, per route and upstream",
            "responses": with(refusals(&mut s, false, &[]), json!({
                "200": answer("The status document.", s.of::<Status>())
            }))
        }},
        "/api/v1/diffs": { "get": {
            "operationId": "diffs", "summary": "Recent shadow mismatches, newest first",
            "parameters": [
                { "name": "route", "in": "query", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1 } }
            ],
            "responses": with(refusals(&mut s, false, &[
                ("400", "A parameter is unknown or not a positive number."),
                ("404", "No route has that name.")
            ]), json!({ "200": answer("The mismatches.", s.of::<Diffs>()) }))
        }},
        "/api/v1/explain": { "get": {
            "operationId": "explain",
            "summary": "What the proxy would do with a request now (its own decision on its snapshot)",
            "parameters": [
                { "name": "method", "in": "query", "required": true, "schema": { "type": "string" } },
                { "name": "url", "in": "query", "required": true, "schema": { "type": "string" },
                  "description": "A URL or a path starting with '/'." },
                { "name": "header", "in": "query", "schema": { "type": "array", "items": { "type": "string" } },
                  "style": "form", "explode": true, "description": "`name: value`; repeatable." },
                { "name": "client_ip", "in": "query", "schema": { "type": "string" } }
            ],
            "responses": with(refusals(&mut s, false, &[
                ("400", "The method, URL, a header or the client IP is not valid, or a parameter is unknown.")
            ]), json!({ "200": answer("The decision.", s.of::<Explanation>()) }))
        }},
        "/api/v1/history": { "get": {
            "operationId": "history",
            "summary": "Each route's last fifteen minutes at ten-second resolution, kept in memory",
            "responses": with(refusals(&mut s, false, &[]), json!({
                "200": answer("Per route, oldest point first.", s.of::<HistoryDoc>())
            }))
        }},
        "/api/v1/fleet": { "get": {
            "operationId": "fleet",
            "summary": "The replicas sharing this one's state store, and what each has applied",
            "responses": with(refusals(&mut s, false, &[]), json!({
                "200": answer("The fleet as this replica sees it.", s.of::<FleetView>())
            }))
        }},
        "/api/v1/tables": {
            "get": {
                "operationId": "tables",
                "summary": "The route tables in the fleet's store, newest first (`banyan history`)",
                "responses": with(refusals(&mut s, false, &[
                    ("409", "Route tables are not kept in the store here ([state] routes = \"store\" with etcd)."),
                    ("503", "The store cannot be reached.")
                ]), json!({ "200": answer("The tables, without their files' text.", s.of::<Tables>()) }))
            },
            "post": {
                "operationId": "pushTable",
                "summary": "Validate route files and store them as the fleet's next table (`banyan push`)",
                "requestBody": { "required": true, "content": json_content(s.of::<PushBody>()) },
                "responses": with(refusals(&mut s, true, &[
                    ("400", "The body is not `{\"files\": {\"NAME.toml\": \"...\"}, \"reason\": \"...\"}`."),
                    ("409", "Route tables are not kept in the store here, or another replica stored a table since this one saw its last; nothing was stored."),
                    ("413", "The body is larger than a table may be."),
                    ("503", "The store cannot be reached; nothing was stored.")
                ]), json!({
                    "200": answer("Stored and served here; `fleet` says which replicas serve it.", s.of::<Pushed>()),
                    "422": answer("The files have errors; nothing was stored and no replica changed.", s.of::<PushRefused>())
                }))
            }
        },
        "/api/v1/tables/{number}": { "get": {
            "operationId": "table", "summary": "One stored route table, with its files",
            "parameters": [table_number()],
            "responses": with(refusals(&mut s, false, &[
                ("404", "No table has that number."),
                ("409", "Route tables are not kept in the store here."),
                ("503", "The store cannot be reached.")
            ]), json!({ "200": answer("The table.", s.of::<Table>()) }))
        }},
        "/api/v1/tables/{number}/revert": { "post": {
            "operationId": "revertTable",
            "summary": "Store an old route table again as the newest (`banyan revert`)",
            "parameters": [table_number()],
            "requestBody": reason_body,
            "responses": with(refusals(&mut s, true, &[
                ("400", "The body is not `{\"reason\": \"...\"}`."),
                ("404", "No table has that number."),
                ("409", "Route tables are not kept in the store here, or another replica stored a table since this one saw its last."),
                ("503", "The store cannot be reached; nothing was stored.")
            ]), json!({
                "200": answer("Stored and served here.", s.of::<Pushed>()),
                "422": answer("The old table does not compile with this config; nothing was stored.", s.of::<PushRefused>())
            }))
        }},
        "/api/v1/audit": { "get": {
            "operationId": "audit",
            "summary": "The latest changes of routing state: the fleet's (etcd), or this replica's `audit.jsonl`",
            "parameters": [
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
            ],
            "responses": with(refusals(&mut s, false, &[
                ("400", "A parameter is unknown or not a positive number.")
            ]), json!({ "200": answer("Oldest first.", s.of::<Audit>()) }))
        }},
        "/api/v1/openapi.json": { "get": {
            "operationId": "openapi", "summary": "This document",
            "responses": with(refusals(&mut s, false, &[]), json!({
                "200": answer("OpenAPI 3.1.", json!({ "type": "object" }))
            }))
        }},
        "/api/v1/reload": { "post": {
            "operationId": "reload", "summary": "Read the route files again",
            "responses": with(refusals(&mut s, true, &[]), json!({
                "200": answer("The new generation serves.", s.of::<Reloaded>()),
                "422": answer("The files have errors; the last good routes keep serving.", s.of::<ReloadRefused>())
            }))
        }},
        "/api/v1/rollback": { "post": {
            "operationId": "rollbackAll", "summary": "Every route to 0 %, shadow paused, until resumed",
            "parameters": [direct()],
            "requestBody": reason_body,
            "responses": with(refusals(&mut s, true, &[("400", "The body is not `{\"reason\": \"...\"}`."), ("409", "With a fleet store: another replica changed the overrides since this one applied its last change; nothing was changed.")]),
                json!({ "200": changed, "500": not_persisted }))
        }},
        "/api/v1/resume": { "post": {
            "operationId": "resumeAll", "summary": "Clear every override: the route files decide again",
            "responses": with(refusals(&mut s, true, &[("409", "With a fleet store: another replica changed the overrides since this one applied its last change; nothing was changed.")]), json!({ "200": changed, "500": not_persisted }))
        }},
        "/api/v1/routes/{name}/percent": { "post": {
            "operationId": "setPercent", "summary": "Override a route's percent until resumed",
            "parameters": [route_name()],
            "requestBody": percent_body,
            "responses": with(refusals(&mut s, true, &[
                ("400", "The body is not `{\"percent\": 25, \"reason\": \"...\"}` with a percent from 0 to 100."),
                ("404", "No route has that name."),
                ("409", "The route has no target to send a percent to, or (with a fleet store) another replica changed the overrides since this one applied its last change.")
            ]), json!({ "200": changed, "500": not_persisted }))
        }},
        "/api/v1/routes/{name}/rollback": { "post": {
            "operationId": "rollbackRoute", "summary": "One route to 0 %, shadow paused, until resumed",
            "parameters": [route_name(), direct()],
            "requestBody": reason_body,
            "responses": with(refusals(&mut s, true, &[
                ("400", "The body is not `{\"reason\": \"...\"}`."),
                ("404", "No route has that name."),
                ("409", "With a fleet store: another replica changed the overrides since this one applied its last change; nothing was changed.")
            ]), json!({ "200": changed, "500": not_persisted }))
        }},
        "/api/v1/routes/{name}/resume": { "post": {
            "operationId": "resumeRoute", "summary": "Clear one route's override",
            "parameters": [route_name()],
            "responses": with(refusals(&mut s, true, &[("404", "No route has that name."), ("409", "With a fleet store: another replica changed the overrides since this one applied its last change; nothing was changed.")]),
                json!({ "200": changed, "500": not_persisted }))
        }},
        "/api/v1/routes/{name}/ramp/{verb}": { "post": {
            "operationId": "rampVerb", "summary": "Start, pause, resume or abort a route's [route.ramp]",
            "parameters": [route_name(), { "name": "verb", "in": "path", "required": true,
                "schema": { "type": "string", "enum": ["start", "pause", "resume", "abort"] } }],
            "requestBody": reason_body,
            "responses": with(refusals(&mut s, true, &[
                ("400", "The body is not `{\"reason\": \"...\"}`."),
                ("404", "No route has that name, or it has no [route.ramp]."),
                ("409", "The verb does not apply to the ramp as it is (starting a running ramp, resuming one under an override …), or ramps with a fleet store.")
            ]), json!({ "200": ramp_moved, "500": ramp_moved }))
        }},
        "/api/v1/routes/{name}/promote": { "post": {
            "operationId": "promote", "summary": "A ramp's next step now, or its last one (`full`), without waiting for its gates",
            "parameters": [route_name()],
            "requestBody": { "required": false, "content": json_content(s.of::<PromoteBody>()) },
            "responses": with(refusals(&mut s, true, &[
                ("400", "The body is not `{\"reason\": \"...\", \"full\": true}`."),
                ("404", "No route has that name, or it has no [route.ramp]."),
                ("409", "The ramp is not running or paused.")
            ]), json!({ "200": ramp_moved, "500": ramp_moved }))
        }}
    });
    let schemas = s.0.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "banyan admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Routing state, overrides, shadow comparisons and explanations of a running banyan. Changes are audited in state/audit.jsonl; a CLI sends `x-banyan-client: cli` and `x-banyan-actor`."
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "security": [{}, { "bearer": [] }],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "admin.token_file, BANYAN_ADMIN_TOKEN or a token of [admin.tokens]; without any, the API is open on loopback only." } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "unresolved $ref {name}");
        }
        assert!(schemas.contains_key("Status") && schemas.contains_key("Explanation"));
    }
}
