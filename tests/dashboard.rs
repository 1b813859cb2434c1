//! The migration dashboard in a real browser: Debian's chromium, headless, driven through
//! its DevTools protocol. The page loads, shows a route's percent, asks for the admin
//! token, and its rollback and resume buttons move the route; it shows real p99s,
//! override ages as relative times, every upstream's health and breaker, and without a
//! token its first paint has data and its charts fill from the proxy's history. A
//! screenshot of the last state goes to `target/dashboard.png` for a person to look at.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{wait_until, DEADLINE};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless chromium with one page, stopped when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ws: Socket,
    next_id: u64,
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| {
                    std::env::var_os("PATH").and_then(|paths| {
                        std::env::split_paths(&paths)
                            .map(|p| p.join(name))
                            .find(|p| p.is_file())
                    })
                })
        })
        .expect("chromium is installed (.ci/run installs Debian's `chromium`)")
}

/// GET from chromium's DevTools HTTP endpoint, which keeps the connection open after
/// answering: the body is read up to its Content-Length.
fn devtools_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let (head, body) = common::read_response(&mut s)?;
    head.starts_with("HTTP/1.1 200").then_some(body)
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let mut port = 0u16;
        wait_until("chromium's DevTools port", || {
            port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                .unwrap_or(0);
            port != 0
        });
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut url = String::new();
        wait_until("a page target", || {
            let Some(body) = devtools_get(devtools, "/json/list") else {
                return false;
            };
            let targets: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            url = targets
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                .unwrap_or("")
                .to_string();
            !url.is_empty()
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (ws, _) = rt
            .block_on(tokio_tungstenite::connect_async(url.as_str()))
            .expect("DevTools websocket");
        Browser {
            child,
            _profile: profile,
            rt,
            ws,
            next_id: 0,
        }
    }

    /// One DevTools command and its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        let ws = &mut self.ws;
        self.rt.block_on(async {
            ws.send(Message::Text(msg.into())).await.expect("send");
            let deadline = Instant::now() + DEADLINE;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let next = tokio::time::timeout(left, ws.next())
                    .await
                    .expect("a DevTools answer in time")
                    .expect("the DevTools socket is open")
                    .expect("a DevTools message");
                let Message::Text(text) = next else { continue };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        })
    }

    /// Evaluates a JavaScript expression in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Saves what the page shows as a PNG.
    fn screenshot(&mut self, path: &std::path::Path) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
        );
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = r["data"].as_str().expect("screenshot data");
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 from DevTools");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Polls an expression until it returns `want`.
    fn wait_for(&mut self, what: &str, expression: &str, want: Value) {
        let start = Instant::now();
        loop {
            let got = self.eval(expression);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}: last saw {got}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PERCENT: &str = r#"(() => { const e = document.querySelector('tr[data-route="orders"] [data-field="effective-percent"]'); return e ? e.textContent : null; })()"#;

fn click(action: &str) -> String {
    format!(
        r#"(() => {{ const b = document.querySelector('tr[data-route="orders"] button[data-action="{action}"]'); if (!b) return false; b.click(); return true; }})()"#
    )
}

#[test]
fn the_dashboard_rolls_a_route_back_and_resumes_it_in_a_real_browser() {
    let (_monolith, _orders, setup) = common::orders_world(25.0);
    let mut setup = setup.route_file(
        "catalog.toml",
        "[[route]]\nname = \"catalog\"\nmatch.path_prefix = \"/catalog\"\nlegacy = \"monolith\"\n\n[route.shadow]\npercent = 100\nupstream = \"orders\"\n",
    );
    setup.env = vec![("BANYAN_ADMIN_TOKEN", "dashboard-s3cret")];
    let b = setup.start();
    let mut browser = Browser::start();
    browser.call(
        "Page.navigate",
        json!({ "url": format!("http://{}/", b.admin) }),
    );
    // Without the token the API refuses, and the page says what to do.
    browser.wait_for(
        "the token banner",
        r#"document.getElementById('banners').textContent.includes('needs a token')"#,
        json!(true),
    );
    browser.eval(
        r#"document.getElementById('token').value = 'dashboard-s3cret'; document.getElementById('save-token').click(); true"#,
    );
    browser.wait_for("the route's percent", PERCENT, json!("25.00"));

    assert_eq!(browser.eval(&click("rollback")), json!(true));
    browser.wait_for("the rollback on the page", PERCENT, json!("0.00"));
    let override_text = browser.eval(
        r#"document.querySelector('tr[data-route="orders"] [data-field="override"]').textContent"#,
    );
    assert!(
        override_text.as_str().is_some_and(|t| t.contains("manual")
            && t.contains("dashboard")
            && t.contains("s ago")),
        "{override_text}"
    );
    // The age is relative, the absolute time on hover.
    let title = browser.eval(
        r#"document.querySelector('tr[data-route="orders"] [data-field="override-age"] .rel').title"#,
    );
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{title}"
    );
    // The proxy agrees: the override is in force, from the API.
    let status = common::http_request(
        b.admin,
        "GET",
        "/api/v1/status",
        Some("Bearer dashboard-s3cret"),
        "",
    );
    let status: Value = serde_json::from_str(&status.1).expect("status");
    let orders = status["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "orders"))
        .expect("orders");
    assert_eq!(orders["effective_percent"], 0.0);
    assert_eq!(orders["override"]["reason"], "rollback from the dashboard");
    let audit = std::fs::read_to_string(b.path("state/audit.jsonl")).expect("audit");
    assert!(audit.contains("\"source\":\"api\"") && audit.contains("rollback from the dashboard"));

    assert_eq!(browser.eval(&click("resume")), json!(true));
    browser.wait_for("the resume on the page", PERCENT, json!("25.00"));

    // Set a percent: the value being typed survives the page's own refreshes.
    browser.eval(
        r#"(() => { const i = document.querySelector('tr[data-route="orders"] input'); i.focus(); i.value = '12.5'; return true; })()"#,
    );
    let seen = browser.eval("Number(document.body.dataset.refreshes)");
    let later = seen.as_f64().unwrap_or(0.0) + 2.0;
    browser.wait_for(
        "two refreshes",
        &format!("Number(document.body.dataset.refreshes) >= {later}"),
        json!(true),
    );
    assert_eq!(
        browser.eval(r#"document.querySelector('tr[data-route="orders"] input').value"#),
        json!("12.5")
    );
    assert_eq!(browser.eval(&click("set")), json!(true));
    browser.wait_for("the new percent", PERCENT, json!("12.50"));

    // Every upstream's health and breaker, whether or not anything is wrong.
    assert_eq!(
        browser.eval(r#"[...document.querySelectorAll('#upstreams tr[data-upstream] [data-field="peer"]')].map((e) => e.textContent).join('|')"#),
        json!("● in rotation|● in rotation")
    );
    assert_eq!(
        browser.eval(r#"[...document.querySelectorAll('#upstreams [data-field="circuit"]')].map((e) => e.textContent).join('|')"#),
        json!("closed|closed")
    );

    // A mirrored route shows its match rate and how many copies were compared.
    for i in 0..3 {
        let (code, _) = common::http_request(b.proxy, "GET", &format!("/catalog/{i}"), None, "");
        assert_eq!(code, 200);
    }
    browser.wait_for(
        "the shadow's match count",
        r#"(() => { const e = document.querySelector('tr[data-route="catalog"] [data-field="shadow"]'); return e ? e.textContent : null; })()"#,
        json!("100.0 % match (3)"),
    );
    // Drops say which bound turned the copies away.
    let cell = browser.eval(
        r#"document.createRange().createContextualFragment(shadowCell({active: true, compare: true, stats: {match: 221, mismatch: 0, match_rate: 1, errors: 0, dropped: 82, dropped_by_reason: [["worker_behind", 79], ["max_in_flight", 3]]}})).textContent"#,
    );
    assert_eq!(
        cell,
        json!("100.0 % match (221)82 dropped (worker behind 79, max in flight 3)")
    );
}

/// Without a token (loopback only) the page arrives with data, and the charts fill from
/// the proxy's fifteen minutes of history; p99s are real durations, not bucket bounds.
#[test]
fn the_dashboard_paints_data_first_and_charts_the_history() {
    let (_monolith, _orders, setup) = common::orders_world(25.0);
    let setup = setup.route_file(
        "catalog.toml",
        "[[route]]\nname = \"catalog\"\nmatch.path_prefix = \"/catalog\"\nlegacy = \"monolith\"\n\n[route.shadow]\npercent = 100\nupstream = \"orders\"\n",
    )
    .route_file(
        "carts.toml",
        "[[route]]\nname = \"carts\"\nmatch.path_prefix = \"/carts\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 0\n\n[route.ramp]\nsteps = [5, 50, 100]\nhold = \"1h\"\nmin_requests = 1000\n",
    );
    let b = setup.start();
    let started = b.cli(&["ramp", "start", "carts"]);
    assert!(started.status.success(), "{started:?}");
    let traffic = |n: usize| {
        for i in 0..n {
            let user = format!("u{i}");
            let _ = common::try_http_request_with_headers(
                b.proxy,
                "GET",
                &format!("/api/orders/{i}"),
                &[("x-user-id", &user)],
            );
            let _ = common::http_request(b.proxy, "GET", &format!("/catalog/{i}"), None, "");
        }
    };
    traffic(40);
    // The history's first point comes ten seconds after the first reading.
    wait_until("a history point with requests", || {
        let (_, body) = b.admin_get("/api/v1/history");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["routes"]["orders"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["legacy"]["rps"].as_f64() > Some(0.0)))
    });
    traffic(10);

    let page = common::http_get(b.admin, "/").expect("the page").1;
    assert!(page.contains(r#"<script id="initial" type="application/json">"#));
    let mut browser = Browser::start();
    browser.call(
        "Page.navigate",
        json!({ "url": format!("http://{}/", b.admin) }),
    );
    browser.wait_for(
        "the embedded first paint",
        "document.body.dataset.initial",
        json!("embedded"),
    );
    assert_eq!(
        browser.eval(r#"document.getElementById('meta').textContent.includes('generation 1')"#),
        json!(true)
    );
    for chart in ["rps", "errors", "p99"] {
        let points = browser.eval(&format!(
            r#"Number(document.querySelector('[data-charts="orders"] [data-chart="{chart}"] svg').dataset.points)"#
        ));
        assert!(points.as_f64() >= Some(1.0), "{chart}: {points}");
    }
    assert_eq!(
        browser.eval(r#"document.querySelectorAll('[data-charts="orders"] [data-chart="rps"] polyline').length >= 1"#),
        json!(true)
    );
    assert_eq!(
        browser.eval(r#"document.querySelector('[data-charts="catalog"] [data-chart="match"] .now').textContent"#),
        json!("100.0 %")
    );
    assert_eq!(
        browser.eval(
            r#"document.querySelector('[data-charts="orders"] [data-chart="match"]') === null"#
        ),
        json!(true),
        "a route without a shadow has no match chart"
    );
    // The ramp: its step and its gates, judged once a second.
    browser.wait_for(
        "the ramp's gates",
        r#"(() => { const e = document.querySelector('tr[data-route="carts"] [data-field="ramp"]'); return e ? e.textContent.includes('ramp running at 5.00 % · step 1 of 3') && e.querySelector('[data-gate="requests"]') !== null : false; })()"#,
        json!(true),
    );
    // The table's p99 is a duration in ms, not a bucket bound.
    browser.wait_for(
        "a p99 in the table",
        r#"(() => { const e = document.querySelector('tr[data-route="orders"] [data-field="p99"]'); return e ? /^[0-9.]+ ms$/.test(e.textContent) : false; })()"#,
        json!(true),
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&out);
    let png = std::fs::read(&out).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
