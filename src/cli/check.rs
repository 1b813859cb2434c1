//! `banyan check`: validate config and route files, print what would be served.

use std::path::Path;
use std::process::ExitCode;

use super::common::{load_all, print_report, refuse, shown};
use crate::routes::split::bp_to_text;

pub fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let (config, set, report) = match load_all(config_path) {
        Ok(loaded) => loaded,
        Err(report) => return Err(refuse(&report, "check failed")),
    };
    let s = &config.server;
    println!("config     {}", shown(&config.file));
    println!(
        "routes     {}  ({} file{})",
        s.routes_dir.display(),
        set.files.len(),
        if set.files.len() == 1 { "" } else { "s" }
    );
    for f in &set.files {
        println!("             {}", f.display());
    }
    println!("state      {}", s.state_dir.display());
    if let crate::config::state::Store::Etcd(e) = &config.state {
        println!(
            "fleet      etcd {} under {} as replica {}{}",
            e.endpoints.join(", "),
            e.prefix,
            e.replica,
            if e.tls.is_some() { " (TLS)" } else { "" }
        );
        if e.routes_from_store {
            println!("           route tables from the store (`banyan push`); the folder above seeds an empty store");
        }
    }
    let listen: Vec<String> = s.listen.iter().map(|a| a.to_string()).collect();
    println!(
        "listen     {}   admin {}",
        listen.join(", "),
        config.admin.listen
    );
    println!(
        "           {}",
        crate::rlimit::describe(s.limits.max_connections)
    );
    if let Some(t) = &s.tls {
        println!(
            "tls        {}  {} + {}: {}",
            t.listen,
            t.cert.display(),
            t.key.display(),
            t.serving
        );
    }
    println!("upstreams");
    let width = config.upstreams.keys().map(String::len).max().unwrap_or(0);
    for (name, u) in &config.upstreams {
        let peers: Vec<String> = u
            .peers
            .iter()
            .map(|p| {
                if p.spec == p.addr.to_string() {
                    p.spec.clone()
                } else {
                    format!("{} ({})", p.spec, p.addr)
                }
            })
            .collect();
        let mut extra = String::new();
        if let Some(t) = &u.tls {
            extra.push_str(&format!(
                "  tls sni {}{}{}",
                t.sni,
                if t.ca.is_some() {
                    ", own CA"
                } else {
                    ", system roots"
                },
                if t.client.is_some() {
                    ", client certificate"
                } else {
                    ""
                }
            ));
        }
        if let Some(h) = &u.health {
            extra.push_str(&format!(
                "  health {} every {}",
                h.path,
                humantime::format_duration(h.interval)
            ));
        }
        println!("  {name:width$}  {}{extra}", peers.join(", "));
    }
    println!("routes");
    let width = set
        .routes
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    for r in &set.routes {
        let sides = match &r.target {
            Some(t) => format!("{} → {t} {}%", r.legacy, bp_to_text(r.percent_bp)),
            None => format!("{} only", r.legacy),
        };
        println!(
            "  {:width$}  {}  [{}]  sticky {}  ({}:{})",
            r.name,
            sides,
            r.describe_match(),
            r.sticky.describe(),
            shown(&r.file),
            r.line
        );
    }
    println!(
        "  {:width$}  {} (unmatched requests)",
        crate::routes::DEFAULT_ROUTE,
        s.default_upstream
    );
    print_report(&report);
    let warnings = report.warnings().count();
    println!(
        "ok: {} route{}, {} upstream{}{}",
        set.routes.len(),
        if set.routes.len() == 1 { "" } else { "s" },
        config.upstreams.len(),
        if config.upstreams.len() == 1 { "" } else { "s" },
        if warnings > 0 {
            format!(", {warnings} warning(s)")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
