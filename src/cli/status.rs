//! `banyan status`: the table a person reads during an incident — per route the match,
//! legacy → target, declared → effective percent, the override with its reason and age,
//! requests/s and error rate per side — or `--json`, the admin API's document as is.

use std::process::ExitCode;

use anyhow::bail;

use super::client::{Admin, AdminArgs};
use crate::admin::status::{RouteStatus, ShadowStatus, Status};
use crate::control::rates::SideRate;

#[derive(clap::Args)]
pub struct Args {
    /// Print the admin API's JSON document.
    #[arg(long)]
    json: bool,
    /// The fleet: every replica sharing the state store, and what each has applied.
    #[arg(long)]
    fleet: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

pub(super) fn age(seconds: Option<u64>) -> String {
    match seconds {
        None => String::new(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) if s < 172_800 => format!("{}h ago", s / 3600),
        Some(s) => format!("{}d ago", s / 86_400),
    }
}

fn percent(p: f64) -> String {
    format!("{p:.2}")
}

fn side(rate: &SideRate, present: bool) -> (String, String) {
    if !present {
        return ("-".into(), "-".into());
    }
    let rps = format!("{:.1}", rate.rps);
    let err = rate
        .error_rate
        .map_or("-".to_string(), |e| format!("{:.1}%", e * 100.0));
    (rps, err)
}

/// "98.5% match (1200), 3 noisy" — or what stops comparisons.
fn shadow_cell(s: &ShadowStatus) -> String {
    let st = &s.stats;
    let mut cell = match st.match_rate {
        Some(rate) => format!(
            "{:.1}% match ({})",
            rate * 100.0,
            st.matched + st.mismatched
        ),
        None if !s.compare => "mirroring".to_string(),
        None => "no comparisons yet".to_string(),
    };
    if !st.noisy_fields.is_empty() {
        cell.push_str(&format!(", {} noisy", st.noisy_fields.len()));
    }
    if st.errors > 0 {
        cell.push_str(&format!(", {} errors", st.errors));
    }
    if st.dropped > 0 {
        cell.push_str(&format!(", {} dropped", st.dropped));
        let reasons: Vec<String> = st
            .dropped_by_reason
            .iter()
            .map(|(reason, n)| format!("{} {n}", reason.replace('_', " ")))
            .collect();
        if !reasons.is_empty() {
            cell.push_str(&format!(" ({})", reasons.join(", ")));
        }
    }
    cell
}

fn row(r: &RouteStatus) -> Vec<String> {
    let sides = match &r.target {
        Some(t) => format!("{} → {t}", r.legacy),
        None => r.legacy.clone(),
    };
    let percents = match (&r.target, r.declared_percent == r.effective_percent) {
        (None, _) => "-".to_string(),
        (Some(_), true) => percent(r.effective_percent),
        (Some(_), false) => format!(
            "{} → {}",
            percent(r.declared_percent),
            percent(r.effective_percent)
        ),
    };
    let over = r.override_.as_ref().map_or(String::new(), |o| {
        let mut s = format!("{} {}", o.trigger, age(o.age_seconds));
        if !o.reason.is_empty() {
            s.push_str(&format!(": {}", o.reason));
        }
        s.trim().to_string()
    });
    let (lr, le) = side(&r.rates.legacy, true);
    let (tr, te) = side(&r.rates.target, r.target.is_some());
    let shadow = match &r.shadow {
        None => "-".to_string(),
        Some(s) if s.paused => "paused".to_string(),
        Some(s) if !s.active => "off".to_string(),
        Some(s) => shadow_cell(s),
    };
    vec![
        r.name.clone(),
        r.matcher.summary.clone(),
        sides,
        percents,
        over,
        lr,
        le,
        tr,
        te,
        shadow,
    ]
}

fn print_table(status: &Status) {
    let header: Vec<String> = [
        "ROUTE",
        "MATCH",
        "LEGACY → TARGET",
        "PERCENT",
        "OVERRIDE",
        "LEGACY/s",
        "ERR",
        "TARGET/s",
        "ERR",
        "SHADOW",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(status.routes.iter().map(row))
        .collect();
    print_rows(&rows);
}

/// What is wrong or has been worked around: peers out of rotation, open breakers,
/// fallbacks and the guard's windows.
fn fault_lines(status: &Status) -> Vec<String> {
    let mut out = Vec::new();
    for u in &status.upstreams {
        if u.circuit_open {
            out.push(format!(
                "{}: circuit open (target-bound traffic goes to legacy)",
                u.name
            ));
        }
        let down: Vec<&str> = u
            .health
            .iter()
            .filter(|p| !p.healthy)
            .map(|p| p.peer.as_str())
            .collect();
        if !down.is_empty() {
            out.push(format!(
                "{}: out of rotation ({}): {}",
                u.name,
                if u.health_checks {
                    "health checks"
                } else {
                    "proxy errors"
                },
                down.join(", ")
            ));
        }
    }
    for r in &status.routes {
        if !r.fallbacks.is_empty() {
            let by: Vec<String> = r
                .fallbacks
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push(format!(
                "{}: fallbacks to legacy: {}",
                r.name,
                by.join(", ")
            ));
        }
        if let Some(g) = &r.guard {
            if g.requests > 0 {
                out.push(format!(
                    "{}: guard window {} requests, {} errors{}",
                    r.name,
                    g.requests,
                    g.errors,
                    g.p99_ms
                        .map_or(String::new(), |p| format!(", p99 {p:.0} ms"))
                ));
            }
        }
        if let Some(l) = &r.rate_limit {
            if l.limited > 0 {
                out.push(format!(
                    "{}: {} requests refused by the rate limit",
                    r.name, l.limited
                ));
            }
        }
    }
    out
}

/// The exit status when something needs a person (`alarms`), for scripts and probes.
pub const NEEDS_ATTENTION: u8 = 3;

/// What makes `banyan status` exit 3: a refused reload (the files on disk are not what
/// serves), a route rolled back by its guard, an upstream with no peer in rotation.
pub fn alarms(status: &Status) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &status.last_reload_error {
        out.push(format!(
            "the last reload was refused ({}): the route files on disk are not what serves",
            e.at
        ));
    }
    for r in &status.routes {
        if let Some(o) = r.override_.as_ref().filter(|o| o.trigger != "manual") {
            out.push(format!(
                "{}: rolled back by its {} ({})",
                r.name, o.trigger, o.reason
            ));
        }
    }
    for u in &status.upstreams {
        if !u.health.is_empty() && u.health.iter().all(|p| !p.healthy) {
            out.push(format!("{}: no peer in rotation", u.name));
        }
    }
    out
}

fn exit_for(alarms: &[String]) -> ExitCode {
    if alarms.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NEEDS_ATTENTION)
    }
}

/// `status --fleet`: one line per replica; exit 3 when the store is away or a replica
/// serves an older revision than this one.
fn fleet(admin: &Admin, json: bool) -> anyhow::Result<ExitCode> {
    let value = match admin.call("GET", "/api/v1/fleet", None) {
        Ok(v) => v,
        Err(e) => bail!("{e}"),
    };
    let view: crate::control::store::FleetView = serde_json::from_value(value.clone())?;
    let mut alarms = Vec::new();
    if !view.up {
        alarms.push(format!(
            "the state store cannot be reached (since {})",
            view.down_since.as_deref().unwrap_or("?")
        ));
    }
    let newest = view
        .replicas
        .iter()
        .map(|r| r.applied_revision)
        .max()
        .unwrap_or(0);
    for r in &view.replicas {
        if r.applied_revision < newest {
            alarms.push(format!(
                "{} serves revision {} of {newest}",
                r.replica, r.applied_revision
            ));
        }
        if let Some(e) = &r.error {
            alarms.push(format!("{}: {e}", r.replica));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "store {} ({}) · {} replica{} · asked {}{}",
            view.store,
            if view.up { "up" } else { "DOWN" },
            view.replicas.len(),
            if view.replicas.len() == 1 { "" } else { "s" },
            view.replica,
            match &view.leader {
                Some(l) => format!(" · {l} judges the fleet's aggregates"),
                None => String::new(),
            }
        );
        println!();
        let mut rows = vec![vec![
            "REPLICA".to_string(),
            "REVISION".into(),
            "TABLE".into(),
            "SNAPSHOT".into(),
            "VERSION".into(),
            "ADMIN".into(),
            "SEEN".into(),
        ]];
        for r in &view.replicas {
            rows.push(vec![
                r.replica.clone(),
                r.applied_revision.to_string(),
                if r.table == 0 {
                    "folder".to_string()
                } else {
                    r.table.to_string()
                },
                r.snapshot.to_string(),
                r.version.clone(),
                r.admin.clone(),
                r.at.clone(),
            ]);
        }
        print_rows(&rows);
        if !view.aggregates.is_empty() {
            println!();
            println!("the fleet's last 10 s, added up over its replicas:");
            let fig = |s: &crate::control::rates::SideRate| {
                format!(
                    "{:.1} req/s, {} errors, p99 {}",
                    s.rps,
                    s.error_rate
                        .map_or("-".to_string(), |e| format!("{:.1} %", e * 100.0)),
                    s.p99_ms.map_or("-".to_string(), |p| format!("{p:.1} ms"))
                )
            };
            let mut rows = vec![vec![
                "ROUTE".to_string(),
                "REPLICAS".into(),
                "LEGACY".into(),
                "TARGET".into(),
            ]];
            for (route, r) in &view.aggregates {
                rows.push(vec![
                    route.clone(),
                    r.replicas.to_string(),
                    fig(&r.legacy),
                    fig(&r.target),
                ]);
            }
            print_rows(&rows);
        }
    }
    for a in &alarms {
        eprintln!("banyan: needs attention: {a}");
    }
    Ok(exit_for(&alarms))
}

/// Rows as aligned columns, two spaces apart (the first row is the header).
fn print_rows(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

pub fn status(args: &Args) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    if args.fleet {
        return fleet(&admin, args.json);
    }
    let value = match admin.call("GET", "/api/v1/status", None) {
        Ok(v) => v,
        Err(e) => bail!("{e}"),
    };
    let status: Status = serde_json::from_value(value.clone())?;
    let alarms = alarms(&status);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        for a in &alarms {
            eprintln!("banyan: needs attention: {a}");
        }
        return Ok(exit_for(&alarms));
    }
    println!(
        "banyan {} at {} · generation {} (loaded {}, {:.1} ms) · snapshot {}",
        status.version,
        admin.url,
        status.generation,
        status.loaded_at,
        status.last_reload_ms,
        status.snapshot
    );
    println!();
    print_table(&status);
    let noisy: Vec<String> = status
        .routes
        .iter()
        .filter_map(|r| r.shadow.as_ref().map(|s| (r, s)))
        .filter(|(_, s)| !s.stats.noisy_fields.is_empty())
        .map(|(r, s)| {
            let fields: Vec<String> = s
                .stats
                .noisy_fields
                .iter()
                .map(|f| format!("{} ({})", f.field, f.count))
                .collect();
            format!("  {}: {}", r.name, fields.join(", "))
        })
        .collect();
    if !noisy.is_empty() {
        println!();
        println!("noisy fields (differ between two answers of legacy; left out of comparisons):");
        for line in noisy {
            println!("{line}");
        }
    }
    super::ramp::print_ramps(&status);
    let faults = fault_lines(&status);
    if !faults.is_empty() {
        println!();
        println!("upstreams and fallbacks:");
        for line in faults {
            println!("  {line}");
        }
    }
    if let Some(e) = &status.last_reload_error {
        println!();
        println!(
            "last reload refused ({}, {}); the routes above keep serving:",
            e.at, e.source
        );
        for line in &e.errors {
            println!("  {line}");
        }
    }
    if let Some(e) = &status.overrides_error {
        println!();
        println!("overrides file problem: {e}");
        println!("  the overrides above stay in force; `banyan resume --all` or any override change rewrites the file");
    }
    if !alarms.is_empty() {
        println!();
        println!("needs attention (exit status {NEEDS_ATTENTION}):");
        for a in &alarms {
            println!("  {a}");
        }
    }
    Ok(exit_for(&alarms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::shadow::ShadowStats;

    fn shadow(stats: ShadowStats) -> ShadowStatus {
        ShadowStatus {
            percent: 100.0,
            upstream: "orders".into(),
            methods: vec!["GET".into()],
            compare: true,
            noise: false,
            paused: false,
            active: true,
            ignore: vec![],
            compare_headers: vec![],
            stats,
        }
    }

    #[test]
    fn the_shadow_cell_says_why_copies_were_dropped() {
        let cell = shadow_cell(&shadow(ShadowStats {
            matched: 221,
            match_rate: Some(1.0),
            dropped: 82,
            dropped_by_reason: vec![("worker_behind".into(), 79), ("max_in_flight".into(), 3)],
            ..ShadowStats::default()
        }));
        assert_eq!(
            cell,
            "100.0% match (221), 82 dropped (worker behind 79, max in flight 3)"
        );
        let quiet = shadow_cell(&shadow(ShadowStats {
            matched: 3,
            match_rate: Some(1.0),
            ..ShadowStats::default()
        }));
        assert_eq!(quiet, "100.0% match (3)");
    }
}
