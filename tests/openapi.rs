//! The admin API against its own OpenAPI document: every documented operation is called
//! with valid and with invalid input on a running banyan (one with a token, one
//! without), every answer's status must be one the document lists for the operation,
//! every JSON answer must validate against the documented schema, and every documented
//! status but those no test here can cause on demand (500: `overrides.json` unwritable,
//! 503: still starting or the store away, 409 on rollback and resume: a fleet conflict,
//! in tests/fleet.rs) must have been seen. The route tables' operations are called on a
//! replica whose tables are in a real etcd.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{wait_until, Banyan};
use serde_json::{json, Value};

const TOKEN: &str = "t0k-for-the-contract";

struct Call<'a> {
    op: &'a str,
    method: &'a str,
    path: String,
    body: Option<(&'a str, String)>,
    token: bool,
    origin: Option<&'a str>,
}

fn call<'a>(op: &'a str, method: &'a str, path: impl Into<String>) -> Call<'a> {
    Call {
        op,
        method,
        path: path.into(),
        body: None,
        token: true,
        origin: None,
    }
}

impl<'a> Call<'a> {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(("application/json", body.to_string()));
        self
    }
    fn raw(mut self, content_type: &'a str, body: &str) -> Self {
        self.body = Some((content_type, body.to_string()));
        self
    }
    fn no_token(mut self) -> Self {
        self.token = false;
        self
    }
    fn with_origin(mut self, origin: &'a str) -> Self {
        self.origin = Some(origin);
        self
    }
}

/// The document's operations: operationId → (path template, method, responses).
fn operations(doc: &Value) -> BTreeMap<String, (String, String, Value)> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().expect("operationId").to_string();
            out.insert(
                id,
                (path.clone(), method.to_uppercase(), op["responses"].clone()),
            );
        }
    }
    out
}

/// Whether a concrete path fits a template like `/api/v1/routes/{name}/percent`.
fn fits(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

struct Checker {
    doc: Value,
    ops: BTreeMap<String, (String, String, Value)>,
    agent: ureq::Agent,
    seen: BTreeSet<(String, String)>,
}

impl Checker {
    fn new(doc: Value) -> Checker {
        let ops = operations(&doc);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Checker {
            doc,
            ops,
            agent,
            seen: BTreeSet::new(),
        }
    }

    fn validate(&self, schema: &Value, body: &Value, what: &str) {
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{what}: the document's schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not fit the document: {errors:#?}\n{body:#}"
        );
    }

    /// Sends one call to `b` and checks the answer against the document.
    fn check(&mut self, b: &Banyan, c: Call) -> (u16, Value) {
        let (template, method, responses) = self
            .ops
            .get(c.op)
            .cloned()
            .unwrap_or_else(|| panic!("no operation {}", c.op));
        assert_eq!(method, c.method, "{}", c.op);
        assert!(fits(&template, &c.path), "{} is not {template}", c.path);
        let url = format!("http://{}{}", b.admin, c.path);
        let auth = c.token.then(|| format!("Bearer {TOKEN}"));
        let result = if c.method == "GET" {
            let mut req = self.agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            if let Some(o) = c.origin {
                req = req.header("origin", o);
            }
            req.call()
        } else {
            let mut req = self.agent.post(&url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            if let Some(o) = c.origin {
                req = req.header("origin", o);
            }
            let (content_type, body) = c
                .body
                .clone()
                .unwrap_or(("application/json", String::new()));
            req.header("content-type", content_type).send(body)
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
        let status = resp.status().as_u16();
        let media = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let what = format!("{} {} → {status}", c.method, c.path);
        let documented = &responses[status.to_string()];
        assert!(
            !documented.is_null(),
            "{what}: status not in the document: {text}"
        );
        let content = &documented["content"];
        assert!(
            content.get(&media).is_some(),
            "{what}: content type `{media}` not documented ({content})"
        );
        let value = if media == "application/json" {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: not JSON: {e}: {text}"));
            self.validate(&content[&media]["schema"], &v, &what);
            v
        } else {
            Value::String(text)
        };
        self.seen.insert((c.op.to_string(), status.to_string()));
        (status, value)
    }
}

fn world(token: bool) -> (Vec<common::upstream::Upstream>, Banyan) {
    let (m, o, setup) = common::orders_world(25.0);
    let setup = setup.route_file(
        "plain.toml",
        "[[route]]\nname = \"plain\"\nmatch.path_prefix = \"/plain\"\nlegacy = \"monolith\"\n",
    )
    .route_file(
        "ramped.toml",
        "[[route]]\nname = \"ramped\"\nmatch.path_prefix = \"/ramped\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 0\n\n[route.ramp]\nsteps = [10, 50, 100]\nhold = \"1h\"\n",
    );
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let b = if token {
        Banyan::spawn_with_env(
            setup.write(proxy, admin),
            proxy,
            admin,
            &["run"],
            &[("BANYAN_ADMIN_TOKEN", TOKEN)],
        )
    } else {
        Banyan::spawn(setup.write(proxy, admin), proxy, admin, &["run"])
    };
    (vec![m, o], b)
}

#[test]
fn every_operation_answers_as_its_document_says() {
    let (_ups, t) = world(true);
    let (_ups2, o) = world(false);
    let (code, text) = common::http_request(
        t.admin,
        "GET",
        "/api/v1/openapi.json",
        Some(&format!("Bearer {TOKEN}")),
        "",
    );
    assert_eq!(code, 200, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut c = Checker::new(doc);

    // Some traffic, so that status and diffs have something to say.
    for i in 0..20 {
        let _ = common::try_http_request_with_headers(
            t.proxy,
            "GET",
            &format!("/api/orders/{i}"),
            &[("x-user-id", &format!("u{i}"))],
        );
    }
    let q = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let explain = q(&[
        ("method", "GET"),
        ("url", "/api/orders/7"),
        ("header", "x-user-id: erin"),
        ("header", "accept: */*"),
        ("client_ip", "10.1.2.3"),
    ]);

    // Valid input.
    for call in [
        call("healthz", "GET", "/healthz"),
        call("metrics", "GET", "/metrics"),
        call("dashboard", "GET", "/"),
        call("status", "GET", "/api/v1/status"),
        call("diffs", "GET", "/api/v1/diffs?route=orders&limit=5"),
        call("explain", "GET", format!("/api/v1/explain?{explain}")),
        call("openapi", "GET", "/api/v1/openapi.json"),
        call("history", "GET", "/api/v1/history"),
        call("fleet", "GET", "/api/v1/fleet"),
        call("reload", "POST", "/api/v1/reload"),
        call("setPercent", "POST", "/api/v1/routes/orders/percent")
            .json(json!({"percent": 12.5, "reason": "contract"})),
        call("rollbackRoute", "POST", "/api/v1/routes/orders/rollback")
            .json(json!({"reason": "contract"})),
        call("resumeRoute", "POST", "/api/v1/routes/orders/resume"),
        call("rollbackAll", "POST", "/api/v1/rollback"),
        call("resumeAll", "POST", "/api/v1/resume").json(json!({})),
    ] {
        let what = format!("{} {}", call.method, call.path);
        let (status, _) = c.check(&t, call);
        assert!((200..300).contains(&status), "{what}: {status}");
    }
    // The status document while routes are overridden, with every optional part present.
    let _ = c.check(
        &t,
        call("setPercent", "POST", "/api/v1/routes/orders/percent").json(json!({"percent": 1})),
    );
    let (_, status) = c.check(&t, call("status", "GET", "/api/v1/status"));
    assert!(status["routes"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| !r["override"].is_null())));

    // Invalid input: each refusal the document lists.
    let mut expect = |b: &Banyan, call: Call, want: u16| {
        let what = format!("{} {}", call.method, call.path);
        let (status, _) = c.check(b, call);
        assert_eq!(status, want, "{what}");
    };
    for (op, method, path) in [
        ("status", "GET", "/api/v1/status"),
        ("diffs", "GET", "/api/v1/diffs"),
        ("explain", "GET", "/api/v1/explain?method=GET&url=/"),
        ("openapi", "GET", "/api/v1/openapi.json"),
        ("history", "GET", "/api/v1/history"),
        ("fleet", "GET", "/api/v1/fleet"),
        ("reload", "POST", "/api/v1/reload"),
        ("rollbackAll", "POST", "/api/v1/rollback"),
        ("resumeAll", "POST", "/api/v1/resume"),
        ("setPercent", "POST", "/api/v1/routes/orders/percent"),
        ("rollbackRoute", "POST", "/api/v1/routes/orders/rollback"),
        ("resumeRoute", "POST", "/api/v1/routes/orders/resume"),
        ("tables", "GET", "/api/v1/tables"),
        ("pushTable", "POST", "/api/v1/tables"),
        ("table", "GET", "/api/v1/tables/1"),
        ("revertTable", "POST", "/api/v1/tables/1/revert"),
        ("audit", "GET", "/api/v1/audit"),
        ("rampVerb", "POST", "/api/v1/routes/ramped/ramp/start"),
        ("promote", "POST", "/api/v1/routes/ramped/promote"),
    ] {
        expect(&t, call(op, method, path).no_token(), 401);
        expect(
            &o,
            call(op, method, path)
                .no_token()
                .with_origin("http://evil.example"),
            403,
        );
        if method == "POST" {
            expect(
                &o,
                call(op, method, path).no_token().raw("text/plain", "{}"),
                415,
            );
        }
    }
    expect(&t, call("diffs", "GET", "/api/v1/diffs?limit=0"), 400);
    expect(
        &t,
        call("diffs", "GET", "/api/v1/diffs?since=yesterday"),
        400,
    );
    expect(&t, call("diffs", "GET", "/api/v1/diffs?route=nope"), 404);
    expect(
        &t,
        call("explain", "GET", "/api/v1/explain?method=FOO&url=/x"),
        400,
    );
    expect(
        &t,
        call("explain", "GET", "/api/v1/explain?method=GET"),
        400,
    );
    expect(
        &t,
        call(
            "explain",
            "GET",
            "/api/v1/explain?method=GET&url=/x&client_ip=me",
        ),
        400,
    );
    expect(
        &t,
        call("setPercent", "POST", "/api/v1/routes/orders/percent").json(json!({"percent": 101})),
        400,
    );
    expect(
        &t,
        call("setPercent", "POST", "/api/v1/routes/orders/percent").json(json!({"percent": "ten"})),
        400,
    );
    expect(
        &t,
        call("setPercent", "POST", "/api/v1/routes/orders/percent")
            .json(json!({"percent": 5, "who": "me"})),
        400,
    );
    expect(
        &t,
        call("setPercent", "POST", "/api/v1/routes/nope/percent").json(json!({"percent": 5})),
        404,
    );
    expect(
        &t,
        call("setPercent", "POST", "/api/v1/routes/plain/percent").json(json!({"percent": 5})),
        409,
    );
    expect(
        &t,
        call("rollbackRoute", "POST", "/api/v1/routes/orders/rollback")
            .raw("application/json", "{\"reason\": 7}"),
        400,
    );
    expect(
        &t,
        call("rollbackRoute", "POST", "/api/v1/routes/nope/rollback"),
        404,
    );
    expect(
        &t,
        call("rollbackAll", "POST", "/api/v1/rollback").raw("application/json", "not json"),
        400,
    );
    expect(
        &t,
        call("resumeRoute", "POST", "/api/v1/routes/nope/resume"),
        404,
    );
    // The ramp verbs, and the status document while a ramp runs.
    let ramp = |verb: &str| format!("/api/v1/routes/ramped/ramp/{verb}");
    for (op, path, body, want) in [
        (
            "rampVerb",
            ramp("start"),
            json!({"reason": "contract"}),
            200,
        ),
        ("rampVerb", ramp("start"), json!({}), 409),
        ("rampVerb", ramp("pause"), json!({}), 200),
        ("rampVerb", ramp("resume"), json!({}), 200),
        (
            "promote",
            "/api/v1/routes/ramped/promote".into(),
            json!({"reason": "contract"}),
            200,
        ),
        ("rampVerb", ramp("start"), json!({"reason": 7}), 400),
        (
            "rampVerb",
            "/api/v1/routes/orders/ramp/start".into(),
            json!({}),
            404,
        ),
        (
            "promote",
            "/api/v1/routes/ramped/promote".into(),
            json!({"full": "yes"}),
            400,
        ),
        (
            "promote",
            "/api/v1/routes/nope/promote".into(),
            json!({}),
            404,
        ),
    ] {
        expect(&t, call(op, "POST", path).json(body), want);
    }
    expect(&t, call("status", "GET", "/api/v1/status"), 200);
    let (_, text) = common::http_request(
        t.admin,
        "GET",
        "/api/v1/status",
        Some(&format!("Bearer {TOKEN}")),
        "",
    );
    let status: Value = serde_json::from_str(&text).expect("status");
    let ramped = status["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "ramped"));
    assert_eq!(ramped.map(|r| r["ramp"]["step"].clone()), Some(json!(2)));
    expect(
        &t,
        call("promote", "POST", "/api/v1/routes/ramped/promote").json(json!({"full": true})),
        200,
    );
    expect(&t, call("rampVerb", "POST", ramp("abort")), 200);

    // A reload the route files refuse; the watcher may refuse it first, the API must too.
    std::fs::write(o.path("routes/broken.toml"), "[[route]]\nname = 3\n").expect("write");
    wait_until("the refusal", || !o.status()["last_reload_error"].is_null());
    expect(&o, call("reload", "POST", "/api/v1/reload").no_token(), 422);

    // The route tables: kept in the store only with etcd and routes = "store".
    let table =
        json!({ "files": { "orders.toml": common::orders_route(40.0) }, "reason": "contract" });
    expect(&t, call("tables", "GET", "/api/v1/tables"), 409);
    expect(
        &t,
        call("pushTable", "POST", "/api/v1/tables").json(table.clone()),
        409,
    );
    expect(&t, call("table", "GET", "/api/v1/tables/1"), 409);
    expect(
        &t,
        call("revertTable", "POST", "/api/v1/tables/1/revert"),
        409,
    );
    let etcd = common::etcd::Etcd::start();
    let fleet = common::fleet::fleet_with(&etcd, 1, "routes = \"store\"");
    let r = &fleet.replicas[0];
    wait_until("the store seeded with table 1", || {
        serde_json::from_str::<Value>(&r.admin_get("/api/v1/tables").1)
            .is_ok_and(|v| v["tables"][0]["number"] == 1)
    });
    for (op, method, path, body, want) in [
        ("pushTable", "POST", "/api/v1/tables", Some(table), 200),
        ("tables", "GET", "/api/v1/tables", None, 200),
        ("table", "GET", "/api/v1/tables/2", None, 200),
        ("table", "GET", "/api/v1/tables/99", None, 404),
        (
            "revertTable",
            "POST",
            "/api/v1/tables/1/revert",
            Some(json!({ "reason": "contract" })),
            200,
        ),
        ("revertTable", "POST", "/api/v1/tables/99/revert", None, 404),
        (
            "revertTable",
            "POST",
            "/api/v1/tables/1/revert",
            Some(json!({ "why": "x" })),
            400,
        ),
        (
            "pushTable",
            "POST",
            "/api/v1/tables",
            Some(json!({ "files": { "orders.toml": "[[route]]\nname = 3\n" } })),
            422,
        ),
        (
            "pushTable",
            "POST",
            "/api/v1/tables",
            Some(json!({ "files": 3 })),
            400,
        ),
    ] {
        let mut c = call(op, method, path).no_token();
        if let Some(b) = body {
            c = c.json(b);
        }
        expect(r, c, want);
    }
    let huge = "#".repeat(2 * 1024 * 1024 + 100 * 1024);
    expect(
        r,
        call("pushTable", "POST", "/api/v1/tables")
            .no_token()
            .json(json!({ "files": { "big.toml": huge } })),
        413,
    );
    expect(
        r,
        call("audit", "GET", "/api/v1/audit?limit=5").no_token(),
        200,
    );
    expect(&t, call("audit", "GET", "/api/v1/audit"), 200);
    expect(&t, call("audit", "GET", "/api/v1/audit?limit=0"), 400);
    expect(&t, call("audit", "GET", "/api/v1/audit?route=x"), 400);

    // Every documented answer was seen, but those no test can cause on demand.
    let mut missing = Vec::new();
    for (op, (_, _, responses)) in &c.ops {
        for code in responses.as_object().expect("responses").keys() {
            // 409 on rollback and resume comes only from a fleet store's conflict, which
            // tests/fleet.rs causes with a real etcd.
            // An old table that no longer compiles needs a config changed under a fleet.
            if code == "500"
                || code == "503"
                || (code == "409" && op != "setPercent")
                || (op == "revertTable" && code == "422")
            {
                continue;
            }
            if !c.seen.contains(&(op.clone(), code.clone())) {
                missing.push(format!("{op} {code}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented but never answered: {missing:?}"
    );
}

/// The check itself: an answer that breaks its schema is caught.
#[test]
fn an_answer_that_breaks_the_document_is_caught() {
    let doc = banyan::admin::openapi::document();
    let schema = |name: &str| {
        let mut root = json!({ "$ref": format!("#/components/schemas/{name}") });
        root["components"] = doc["components"].clone();
        jsonschema::draft202012::new(&root).expect("compiles")
    };
    assert!(schema("Reloaded").is_valid(&json!({"generation": 3})));
    assert!(!schema("Reloaded").is_valid(&json!({"generation": "3"})));
    assert!(!schema("Reloaded").is_valid(&json!({})));
    let status = schema("Status");
    assert!(
        !status.is_valid(&json!({"generation": 1})),
        "required fields are required"
    );
}
