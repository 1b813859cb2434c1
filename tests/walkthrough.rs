//! The README's five-minute walkthrough, run as written against `banyan demo` with the
//! repository's example config and routes (moved to free ports): every command must
//! succeed, the answers must come from the side the README says, and the proxy must end
//! where the walkthrough leaves it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{wait_until, Banyan};
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The shell block between the `<!-- NAME:start -->` and `<!-- NAME:end -->` markers.
fn block(name: &str) -> String {
    let readme = readme();
    let start = readme
        .find(&format!("<!-- {name}:start -->"))
        .unwrap_or_else(|| panic!("{name} start marker"));
    let end = readme
        .find(&format!("<!-- {name}:end -->"))
        .unwrap_or_else(|| panic!("{name} end marker"));
    readme[start..end]
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let (dir, [proxy, admin, mono, orders]) = common::demo_folder();
    let b = Banyan::spawn(dir, proxy, admin, &["demo"]);
    wait_until("the demo upstreams", || {
        common::http_get(mono, "/healthz").is_some()
            && common::http_get(orders, "/healthz").is_some()
    });

    // The README top to bottom: the quick start, then the walkthrough. The walkthrough
    // stops after step 1's requests until their copies are compared, as they are by the
    // time a person types the next command, so that step 1's figures can be checked.
    let ports = |text: String| {
        text.replace("localhost:8080", &format!("localhost:{}", proxy.port()))
            .replace("localhost:9090", &format!("localhost:{}", admin.port()))
            .replace("cargo run --release --", "banyan")
    };
    let quickstart = ports(block("quickstart"));
    let walkthrough = ports(block("walkthrough"));
    assert!(
        walkthrough.contains("banyan rollback orders"),
        "{walkthrough}"
    );
    let cut = walkthrough
        .find("banyan status")
        .expect("step 1 has a status");
    let (first, rest) = walkthrough.split_at(cut);
    let script = format!("{quickstart}\n{first}");
    // `banyan` is this build's binary, found first on PATH.
    let bin_dir = Path::new(common::BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |script: &str| {
        let out = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(b.dir.path())
            .env("PATH", &path)
            .env_remove("BANYAN_ADMIN_TOKEN")
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the walkthrough failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let before = run(&script);
    let mut last = Value::Null;
    let compared =
        |s: &Value| s["match"].as_u64().unwrap_or(0) + s["mismatch"].as_u64().unwrap_or(0);
    let waited = std::time::Instant::now();
    while compared(&last) < 41 && waited.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        last = b.route_status("orders")["shadow"]["stats"].clone();
    }
    assert_eq!(
        compared(&last),
        41,
        "step 1's copies compared: {last}\n{before}"
    );
    let after = run(&format!(
        "export PATH=\"$PWD/target/release:$PATH\"\n{rest}"
    ));
    // Step 1's figures, exactly as the README states them.
    let readme = readme();
    for seen in [
        "90.2% match (41)",
        "legacy 3749 · shadow 3750 on order 7",
        "6249 · 6250 on 17",
        "8749 · 8750 on 27",
        "11249 · 11250 on 37",
    ] {
        assert!(readme.contains(seen), "the README no longer says `{seen}`");
    }
    assert!(after.contains("90.2% match (41)"), "{after}");
    for (legacy, shadow) in [(3749, 3750), (6249, 6250), (8749, 8750), (11249, 11250)] {
        assert!(
            after.contains(&format!("legacy {legacy}  ·  shadow {shadow}")),
            "{after}"
        );
    }
    let stdout = format!("{before}{after}");
    // The answers come from the sides the README names, in its order.
    let served: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"served_by\": \""))
        .map(|v| v.trim_end_matches([',', '"']))
        .collect();
    assert_eq!(
        served,
        [
            "monolith", "orders", // the quick start
            "orders", "monolith", "orders", "monolith"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("shadow first"), "{stdout}");
    assert!(stdout.contains("totals off by a cent"), "{stdout}");

    // Step 1's shadow found the bug: the diffs name /total_cents.
    wait_until("the total_cents mismatches", || {
        let out = b.cli(&["diffs", "orders"]);
        String::from_utf8_lossy(&out.stdout).contains("/total_cents")
    });
    // Where the walkthrough leaves the proxy: the route file's 25 %, no override; one
    // manual rollback on record.
    let r = b.route_status("orders");
    assert_eq!(r["effective_percent"], 25.0, "{r}");
    assert!(r["override"].is_null(), "{r}");
    b.wait_metric(
        "banyan_rollbacks_total{route=\"orders\",trigger=\"manual\"}",
        1.0,
    );
    let audit = std::fs::read_to_string(b.path("state/audit.jsonl")).expect("audit");
    for reason in ["shadow first", "first users", "totals off by a cent"] {
        assert!(audit.contains(reason), "{reason} not audited: {audit}");
    }
    let diffs: Value =
        serde_json::from_str(&b.admin_get("/api/v1/diffs?route=orders").1).expect("diffs json");
    assert!(diffs["diffs"].as_array().is_some_and(|d| d
        .iter()
        .all(|d| d["path"].as_str().is_some_and(|p| p.ends_with('7')))));

    // 6. The ramp: started, fed, paused by the match rate the cent fails, aborted. The
    // block stops after its requests until the ramp has judged them, as it has by the
    // time a person types `banyan status`.
    let ramp = ports(block("ramp"));
    let cut = ramp
        .find("banyan status")
        .expect("the ramp block has a status");
    let (feed, look) = ramp.split_at(cut);
    run(&format!(
        "export PATH=\"$PWD/target/release:$PATH\"\n{feed}"
    ));
    wait_until("the ramp paused by its match rate", || {
        b.route_status("orders")["ramp"]["state"] == "paused"
    });
    let seen = run(&format!(
        "export PATH=\"$PWD/target/release:$PATH\"\n{look}"
    ));
    assert!(
        seen.contains("orders: paused at 25%, step 1 of 3 [25 → 50 → 100]"),
        "{seen}"
    );
    assert!(seen.contains("failed: match_rate 0.9"), "{seen}");
    assert!(seen.contains("ramp-pause"), "{seen}");
    let r = b.route_status("orders");
    assert_eq!(r["ramp"]["state"], "aborted", "{r}");
    assert_eq!(r["effective_percent"], 25.0, "{r}");
}
