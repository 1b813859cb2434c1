//! `banyan set`, `banyan rollback`, `banyan resume`: change overrides through the admin
//! API. When the API cannot be reached, they write `overrides.json` themselves (the same atomic write the proxy uses) and say so: a running proxy picks
//! the file up from its watcher, a stopped one at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::{Admin, AdminArgs, CallError};
use crate::control::audit::{self, Source};
use crate::control::overrides::{self, Overrides};
use crate::model::{Override, Trigger};
use crate::routes::load::route_files;
use crate::routes::split::{bp_to_text, percent_to_bp};

#[derive(clap::Args)]
pub struct SetArgs {
    /// The route.
    route: String,
    /// Its new percent (0–100, two decimals).
    percent: f64,
    /// Why, for status and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["routes", "all"])))]
pub struct RollbackArgs {
    /// Routes to roll back.
    routes: Vec<String>,
    /// Every route.
    #[arg(long)]
    all: bool,
    /// Why, for status and the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// The emergency path: roll back on each replica through its own admin API (every
    /// `--admin` given, else the fleet the admin API knows), without the shared store;
    /// shared with the fleet once the store can be reached.
    #[arg(long)]
    direct: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["routes", "all"])))]
pub struct ResumeArgs {
    /// Routes to hand back to the route files.
    routes: Vec<String>,
    /// Every route (also resets an unreadable overrides.json).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

fn print_changes(answer: &Value) {
    for c in answer["changes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        println!(
            "  {}: {}% → {}%",
            c["route"].as_str().unwrap_or("?"),
            c["percent_before"],
            c["percent_after"]
        );
    }
}

/// The exit status when a change is in the fleet's store but some live replica has not
/// applied it yet (they are named).
pub const NOT_EVERYWHERE: u8 = 4;

/// With a fleet store: which replicas serve the change. `false` when some do not yet.
pub(super) fn print_fleet(answer: &Value) -> bool {
    let Some(fleet) = answer.get("fleet").filter(|f| f.is_object()) else {
        return true;
    };
    let names = |k: &str| -> Vec<String> {
        fleet[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (applied, pending) = (names("applied"), names("pending"));
    let ms = fleet["waited_ms"].as_f64().unwrap_or(0.0);
    let total = applied.len() + pending.len();
    if pending.is_empty() {
        println!(
            "  served by all {total} replicas ({}) after {ms:.0} ms (store revision {})",
            applied.join(", "),
            fleet["revision"]
        );
        true
    } else {
        println!(
            "  served by {} of {total} replicas after {ms:.0} ms; not yet by: {}",
            applied.len(),
            pending.join(", ")
        );
        false
    }
}

/// The answer of an operation: printed, or the reason it failed.
fn finish(what: &str, result: Result<Value, CallError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(answer) => {
            println!("{what}");
            print_changes(&answer);
            if !print_fleet(&answer) {
                eprintln!(
                    "banyan: the change is in the store, but not every replica serves it yet"
                );
                return Ok(ExitCode::from(NOT_EVERYWHERE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(CallError::Refused { body, message, .. }) if body["applied"] == true => {
            println!("{what} (in memory only)");
            print_changes(&body);
            bail!("{message}")
        }
        Err(e) => bail!("{e}"),
    }
}

pub fn set(args: &SetArgs) -> anyhow::Result<ExitCode> {
    let Some(bp) = percent_to_bp(args.percent) else {
        bail!(
            "percent {} is not between 0 and 100 with two decimals",
            args.percent
        );
    };
    let admin = Admin::new(&args.admin)?;
    let mut body = json!({ "percent": args.percent });
    if let Some(r) = &args.reason {
        body["reason"] = json!(r);
    }
    let result = admin.call(
        "POST",
        &format!("/api/v1/routes/{}/percent", args.route),
        Some(body),
    );
    if let Err(CallError::Unreachable { at, why }) = result {
        let default_reason = format!("set to {}%", args.percent);
        let reason = args.reason.as_deref().unwrap_or(&default_reason);
        return offline(
            &admin,
            Op::Set(bp),
            false,
            std::slice::from_ref(&args.route),
            Some(reason),
            (&at, &why),
        );
    }
    finish(
        &format!("{} set to {}% until resumed", args.route, args.percent),
        result,
    )
}

pub fn rollback(args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
    if args.direct {
        return rollback_direct(args, body);
    }
    apply(
        &args.admin,
        Bulk::Rollback,
        args.all,
        &args.routes,
        body,
        args.reason.as_deref(),
    )
}

pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    apply(
        &args.admin,
        Bulk::Resume,
        args.all,
        &args.routes,
        None,
        None,
    )
}

/// `rollback --direct`: every replica's admin API, one by one, each applying the rollback
/// on itself alone. The replicas are the `--admin` URLs when several are given, else the
/// fleet the one admin API knows (its last list, even while the store is away).
fn rollback_direct(args: &RollbackArgs, body: Option<Value>) -> anyhow::Result<ExitCode> {
    let urls: Vec<String> = if args.admin.admin.len() > 1 {
        args.admin.admin.clone()
    } else {
        let admin = Admin::new(&args.admin)?;
        let fleet = admin.call("GET", "/api/v1/fleet", None).map_err(|e| {
            anyhow::anyhow!("{e}; name every replica instead: --admin URL --admin URL ...")
        })?;
        let mut urls: Vec<String> = fleet["replicas"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|r| r["admin"].as_str().map(str::to_string))
            .collect();
        urls.sort();
        urls.dedup();
        urls
    };
    let paths: Vec<String> = if args.all {
        vec!["/api/v1/rollback?direct=true".to_string()]
    } else {
        args.routes
            .iter()
            .map(|r| format!("/api/v1/routes/{r}/rollback?direct=true"))
            .collect()
    };
    let mut failed = Vec::new();
    for url in &urls {
        let mut one = args.admin.clone();
        one.admin = vec![url.clone()];
        let admin = Admin::new(&one)?;
        let results: Vec<Result<Value, CallError>> = paths
            .iter()
            .map(|p| admin.call("POST", p, body.clone()))
            .collect();
        match results.iter().find_map(|r| r.as_ref().err()) {
            None => println!("{url}: rolled back on this replica (shared with the fleet once the store can be reached)"),
            Some(e) => {
                println!("{url}: {e}");
                failed.push(url.clone());
            }
        }
    }
    if failed.is_empty() {
        println!(
            "rolled back on {} replica{}",
            urls.len(),
            if urls.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("banyan: not rolled back on: {}", failed.join(", "));
    Ok(ExitCode::from(NOT_EVERYWHERE))
}

/// A rollback or resume of some routes (one call each) or all (one call), through the
/// API; written to the file directly when the API cannot be reached.
fn apply(
    admin: &AdminArgs,
    bulk: Bulk,
    all: bool,
    routes: &[String],
    body: Option<Value>,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(admin)?;
    let (action, done, op) = match bulk {
        Bulk::Rollback => (
            "rollback",
            "rolled back {}: 0 %, shadow paused, until resumed",
            Op::Rollback,
        ),
        Bulk::Resume => (
            "resume",
            "resumed {}: the route files decide again",
            Op::Resume,
        ),
    };
    let calls: Vec<(String, String)> = if all {
        vec![(format!("/api/v1/{action}"), "all routes".to_string())]
    } else {
        routes
            .iter()
            .map(|r| (format!("/api/v1/routes/{r}/{action}"), r.clone()))
            .collect()
    };
    let mut code = ExitCode::SUCCESS;
    for (path, what) in calls {
        match admin.call("POST", &path, body.clone()) {
            Err(CallError::Unreachable { at, why }) => {
                return offline(&admin, op, all, routes, reason, (&at, &why))
            }
            result => {
                if let Err(e) = finish(&done.replace("{}", &what), result) {
                    eprintln!("banyan: {what}: {e}");
                    code = ExitCode::from(1);
                }
            }
        }
    }
    Ok(code)
}

/// What `apply` does to several routes at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Rollback,
    Resume,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// An override to this percent (basis points), shadow as it is.
    Set(u16),
    Rollback,
    Resume,
}

/// Route names in the route files, and whether each has a target, read leniently (a
/// file that does not parse is skipped): enough to check names and expand `--all`
/// without a running proxy.
fn route_names(dir: &Path) -> BTreeMap<String, bool> {
    let mut names = BTreeMap::new();
    for file in route_files(dir).unwrap_or_default() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(doc) = text.parse::<toml::Table>() else {
            continue;
        };
        for route in doc
            .get("route")
            .and_then(|r| r.as_array())
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            if let Some(name) = route.get("name").and_then(|n| n.as_str()) {
                names.insert(name.to_string(), route.get("target").is_some());
            }
        }
    }
    names
}

fn offline(
    admin: &Admin,
    op: Op,
    all: bool,
    routes: &[String],
    reason: Option<&str>,
    (at, why): (&str, &str),
) -> anyhow::Result<ExitCode> {
    let s = admin.settings(why)?;
    let known = route_names(&s.routes_dir);
    for r in routes {
        match known.get(r) {
            None => bail!(
                "cannot reach the admin API at {at}: {why}; and no route `{r}` is in {}",
                s.routes_dir.display()
            ),
            Some(false) if matches!(op, Op::Set(_)) => bail!(
                "cannot reach the admin API at {at}: {why}; and route `{r}` has no target to send a percent to"
            ),
            Some(_) => {}
        }
    }
    let mut current = match overrides::load(&s.state_dir) {
        Ok(o) => o,
        Err(e) if op != Op::Resume || all => {
            eprintln!("banyan: {e}; replacing it");
            Overrides::new()
        }
        Err(e) => bail!("{e}; `banyan resume --all` resets it"),
    };
    let names: Vec<String> = if all {
        known.into_keys().collect()
    } else {
        routes.to_vec()
    };
    let reason = reason.unwrap_or("rollback while the admin API was unreachable");
    let actor = admin.actor();
    let mut entries = Vec::new();
    if op == Op::Resume && all {
        for (route, o) in std::mem::take(&mut current) {
            entries.push((route, Some(o.percent_bp), None));
        }
    } else {
        for name in &names {
            let before = current.get(name).map(|o| o.percent_bp);
            match op {
                Op::Set(bp) => {
                    let shadow = current.get(name).is_none_or(|o| o.shadow);
                    current.insert(
                        name.clone(),
                        Override::new(bp, shadow, Trigger::Manual, reason),
                    );
                    entries.push((name.clone(), before, Some(bp)));
                }
                Op::Rollback => {
                    current.insert(
                        name.clone(),
                        Override::new(0, false, Trigger::Manual, reason),
                    );
                    entries.push((name.clone(), before, Some(0)));
                }
                Op::Resume => {
                    if current.remove(name).is_some() {
                        entries.push((name.clone(), before, None));
                    }
                }
            }
        }
    }
    overrides::store(&s.state_dir, &current).context("writing overrides.json")?;
    let action = match op {
        Op::Set(_) => "set",
        Op::Rollback => "rollback",
        Op::Resume => "resume",
    };
    for (route, before, after) in &entries {
        let mut e = audit::Entry::new(
            Source::Cli,
            action,
            if op == Op::Resume { "resume" } else { reason },
        );
        e.actor = Some(actor.to_string());
        e.route = Some(route.clone());
        e.percent_before = before.map(crate::routes::split::bp_to_percent);
        e.percent_after = after.map(crate::routes::split::bp_to_percent);
        e.reason = format!("{} (admin API unreachable: {why})", e.reason);
        if let Err(err) = audit::append(&s.state_dir, &e) {
            eprintln!("banyan: cannot append to the audit log: {err}");
        }
    }
    println!(
        "the admin API at {at} cannot be reached ({why}); wrote {} directly:",
        overrides::path_in(&s.state_dir).display()
    );
    for (route, _, after) in &entries {
        match after {
            Some(bp) if op == Op::Rollback => {
                println!("  {route}: {}% (shadow paused)", bp_to_text(*bp))
            }
            Some(bp) => println!("  {route}: {}% until resumed", bp_to_text(*bp)),
            None => println!("  {route}: back to the route files"),
        }
    }
    if entries.is_empty() {
        println!("  (no override changed)");
    }
    println!(
        "a running proxy applies it from the file within a second; a stopped one when it starts."
    );
    Ok(ExitCode::SUCCESS)
}
