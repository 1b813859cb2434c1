//! The README's five-minute walkthrough, run as written against `banyan demo` with the
//! repository's example config and routes (moved to free ports): every command must
//! succeed, the answers must come from the side the README says, and the proxy must end
//! where the walkthrough leaves it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{wait_until, Banyan};
use serde_json::Value;

/// The shell block between the walkthrough markers of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- walkthrough:start -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- walkthrough:end -->")
        .expect("walkthrough end marker");
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

    let script = walkthrough().replace("localhost:8080", &format!("localhost:{}", proxy.port()));
    assert!(script.contains("banyan rollback orders"), "{script}");
    // `banyan` is this build's binary, found first on PATH.
    let bin_dir = Path::new(common::BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &script])
        .current_dir(b.dir.path())
        .env("PATH", path)
        .env_remove("BANYAN_ADMIN_TOKEN")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The answers come from the sides the README names, in its order.
    let served: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"served_by\": \""))
        .map(|v| v.trim_end_matches([',', '"']))
        .collect();
    assert_eq!(
        served,
        ["orders", "monolith", "orders", "monolith"],
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
}
