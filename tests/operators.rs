//! The operators' files checked against what they must hold: the Grafana dashboard uses
//! only the contract's metric names, the Kubernetes manifests' banyan config and routes
//! pass `banyan check`, the Deployment and the Dockerfile have what the design asks.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The contract's metric names (DESIGN.md), and banyan's own additions.
const METRICS: &[&str] = &[
    "banyan_requests_total",
    "banyan_request_duration_seconds",
    "banyan_route_target_percent",
    "banyan_route_override",
    "banyan_fallbacks_total",
    "banyan_shadow_requests_total",
    "banyan_shadow_duration_seconds",
    "banyan_rollbacks_total",
    "banyan_config_reloads_total",
    "banyan_config_generation",
    "banyan_upstream_healthy",
    "banyan_circuit_open",
    "banyan_rate_limited_total",
    "banyan_ramp_step",
    "banyan_ramp_state",
    "banyan_ramp_gate",
    "banyan_cohort_requests_total",
];

#[test]
fn the_grafana_dashboard_queries_only_known_metrics() {
    let dash: Value = serde_json::from_str(&read("config/grafana/banyan.json")).expect("JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut seen = std::collections::BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("banyan_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = name
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(METRICS.contains(&base), "{name} in {}", p["title"]);
                seen.insert(base.to_string());
            }
        }
    }
    // What the design asks the dashboard to show.
    for needed in [
        "banyan_route_target_percent",
        "banyan_requests_total",
        "banyan_request_duration_seconds",
        "banyan_shadow_requests_total",
        "banyan_config_reloads_total",
        "banyan_rollbacks_total",
        "banyan_ramp_step",
        "banyan_ramp_state",
        "banyan_ramp_gate",
    ] {
        assert!(seen.contains(needed), "no panel uses {needed}");
    }
}

/// The text of one key of a ConfigMap manifest (`key: |` and its indented block).
fn configmap_entry(manifest: &str, key: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().expect("the key");
    let block: Vec<&str> = lines
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .collect();
    block
        .iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ConfigMap's `banyan.toml` with the cluster's names (which do not resolve here)
/// moved to loopback; everything else as written.
fn cluster_config(manifest: &str) -> String {
    configmap_entry(&read(manifest), "banyan.toml")
        .replace("monolith.shop.svc.cluster.local:80", "127.0.0.1:18081")
        .replace("orders.shop.svc.cluster.local:80", "127.0.0.1:18082")
}

/// `banyan check` in `dir`, with the admin token from the environment as in the
/// Deployment.
fn check_in(dir: &Path) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .arg("check")
        .current_dir(dir)
        .env("BANYAN_ADMIN_TOKEN", "from-the-secret")
        .output()
        .expect("banyan check")
}

#[test]
fn the_kubernetes_config_and_routes_pass_check() {
    let config = cluster_config("config/kubernetes/config.yaml");
    let routes = configmap_entry(&read("config/kubernetes/routes.yaml"), "orders.toml");
    assert!(config.contains("[admin]") && routes.contains("[[route]]"));
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("routes")).expect("mkdir");
    std::fs::write(dir.path().join("config/banyan.toml"), config).expect("config");
    std::fs::write(dir.path().join("routes/orders.toml"), routes).expect("routes");
    let out = check_in(dir.path());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment = read("config/kubernetes/deployment.yaml");
    assert!(deployment.contains("replicas: 2"));
    assert!(deployment
        .contains("readinessProbe:\n            httpGet: { path: /healthz, port: admin }"));
    assert!(deployment.contains("mountPath: /srv/banyan/routes"));
    assert!(
        !deployment
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("subPath")),
        "subPath mounts never see ConfigMap updates"
    );
    let service = read("config/kubernetes/service.yaml");
    assert!(service.contains("kind: Service") && service.contains("targetPort: http"));

    // The etcd variant: the same config with [state] in etcd passes check too.
    let fleet = cluster_config("config/kubernetes/etcd/config.yaml");
    assert!(fleet.contains("store = \"etcd\""));
    std::fs::write(dir.path().join("config/banyan.toml"), fleet).expect("config");
    let out = check_in(dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "fleet      etcd http://banyan-etcd.shop.svc.cluster.local:2379 under /banyan/shop"
        ),
        "{text}"
    );
    let etcd = read("config/kubernetes/etcd/etcd.yaml");
    assert!(etcd.contains("kind: StatefulSet") && etcd.contains("name: banyan-etcd"));
}

#[test]
fn the_dockerfile_is_multi_stage_slim_non_root_and_health_checked() {
    let d = read("Dockerfile");
    assert_eq!(d.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(d.contains("cmake"), "the builder installs cmake");
    assert!(d.contains("FROM debian:bookworm-slim"));
    assert!(d.contains("USER banyan") && d.contains("useradd --system"));
    assert!(d.contains("HEALTHCHECK") && d.contains("/healthz"));
    assert!(d.contains("EXPOSE 8080 8443 9090"));
    assert!(d.contains("\"/srv/banyan/config\", \"/srv/banyan/routes\""));
    // Every bench Cargo.toml names is stubbed in the dependency layer, or the build fails.
    for line in read("Cargo.toml").lines() {
        if let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|n| n.strip_suffix('"'))
        {
            if repo(&format!("benches/{name}.rs")).is_file() {
                assert!(
                    d.contains(name),
                    "bench {name} is not stubbed in the Dockerfile"
                );
            }
        }
    }
}
