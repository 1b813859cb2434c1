//! `banyan push`, `banyan history`, `banyan revert`: the fleet's route tables
//! (`[state] routes = "store"`), through a replica's admin API; and `banyan audit`, the
//! latest changes of routing state (the fleet's, with etcd).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::client::{find_config, Admin, AdminArgs, CallError};
use super::common::{cwd, shown};
use super::overrides::{print_fleet, NOT_EVERYWHERE};
use crate::config::Config;
use crate::control::tables;
use crate::routes::load::route_files;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The folder of route files (default: the config's server.routes_dir).
    dir: Option<PathBuf>,
    /// Why, for the history and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// The newest this many tables.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print one table's files instead.
    #[arg(long, value_name = "NUMBER")]
    show: Option<u64>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
pub struct RevertArgs {
    /// The table to serve again, as `banyan history` numbers it.
    number: u64,
    /// Why, for the history and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// The newest this many entries (at most 1,000).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    admin: AdminArgs,
}

/// The folder's `*.toml` files, by name.
fn read_folder(dir: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for path in route_files(dir).with_context(|| format!("reading {}", shown(dir)))? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", shown(&path)))?;
        files.insert(name, text);
    }
    if files.is_empty() {
        bail!("{} holds no *.toml route files", shown(dir));
    }
    Ok(files)
}

/// The answer of a push or revert: the table, what changed, who serves it.
fn pushed(what: &str, result: Result<Value, CallError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(answer) => {
            println!("{what}: route table {}", answer["number"]);
            for line in answer["summary"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                println!("  {}", line.as_str().unwrap_or("?"));
            }
            if !print_fleet(&answer) {
                eprintln!("banyan: the table is in the store, but not every replica serves it yet");
                return Ok(ExitCode::from(NOT_EVERYWHERE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(CallError::Refused { body, message, .. }) if body["errors"].is_array() => {
            for e in body["errors"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                eprintln!("{}", e.as_str().unwrap_or("?"));
            }
            bail!("{message}")
        }
        Err(e) => bail!("{e}"),
    }
}

pub fn push(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let dir = match (&args.dir, &admin.settings) {
        (Some(d), _) => d.clone(),
        (None, Some(s)) => s.routes_dir.clone(),
        (None, None) => bail!("name the folder of route files: banyan push DIR"),
    };
    let files = read_folder(&dir)?;
    // Checked here first, with this config, so a broken table never leaves the machine;
    // the replica checks again with its own.
    if let Some(path) = find_config(args.admin.config.as_deref())? {
        let config = Config::load(&path, &cwd())
            .map_err(|report| super::common::refuse(&report, "not pushed"))?
            .0;
        if let Err(errors) = tables::validate(&config, &files) {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!(
                "not pushed: {} error{} in {}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                shown(&dir)
            );
        }
    }
    let mut body = json!({ "files": files });
    if let Some(r) = &args.reason {
        body["reason"] = json!(r);
    }
    let n = files.len();
    pushed(
        &format!(
            "pushed {n} file{} of {}",
            if n == 1 { "" } else { "s" },
            shown(&dir)
        ),
        admin.call("POST", "/api/v1/tables", Some(body)),
    )
}

pub fn revert(args: &RevertArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
    pushed(
        &format!("reverted to table {}", args.number),
        admin.call(
            "POST",
            &format!("/api/v1/tables/{}/revert", args.number),
            body,
        ),
    )
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn history(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    if let Some(n) = args.show {
        let table = admin
            .call("GET", &format!("/api/v1/tables/{n}"), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, body) in table["files"].as_object().into_iter().flatten() {
            println!("# {name}");
            println!("{}", text(body).trim_end());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let answer = admin
        .call("GET", "/api/v1/tables", None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let all = answer["tables"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if all.is_empty() {
        println!("no route table in the store yet");
    }
    for t in all.iter().take(args.limit) {
        let by = match t["actor"].as_str() {
            Some(a) => format!("{} ({a})", text(&t["source"])),
            None => text(&t["source"]).to_string(),
        };
        let reverted = match t["reverted_from"].as_u64() {
            Some(n) => format!(", revert to {n}"),
            None => String::new(),
        };
        println!(
            "{} {:>4}  {}  {by} on {}{reverted}: {}",
            if t["current"] == true { "*" } else { " " },
            t["number"],
            text(&t["at"]),
            text(&t["replica"]),
            text(&t["reason"]),
        );
        for line in t["summary"].as_array().into_iter().flatten() {
            println!("         {}", text(line));
        }
    }
    println!(
        "(* this replica serves table {}; `banyan history --show N` prints a table's files)",
        answer["serving"]
    );
    Ok(ExitCode::SUCCESS)
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let answer = admin
        .call(
            "GET",
            &format!("/api/v1/audit?limit={}", args.limit.max(1)),
            None,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for e in answer["entries"].as_array().into_iter().flatten() {
        let who = match e["actor"].as_str() {
            Some(a) => format!("{}:{a}", text(&e["source"])),
            None => text(&e["source"]).to_string(),
        };
        let mut line = format!("{}  {who:<14} {:<9}", text(&e["at"]), text(&e["action"]));
        if let Some(r) = e["route"].as_str() {
            line.push_str(&format!(" {r}"));
        }
        if let (Some(b), Some(a)) = (e["percent_before"].as_f64(), e["percent_after"].as_f64()) {
            line.push_str(&format!(" {b}% → {a}%"));
        }
        line.push_str(&format!("  {}", text(&e["reason"])));
        if e["result"] == "error" {
            line.push_str(&format!("  [refused: {}]", text(&e["error"])));
        }
        if let Some(r) = e["replica"].as_str() {
            line.push_str(&format!("  (on {r})"));
        }
        println!("{line}");
    }
    println!("(from {})", text(&answer["from"]));
    Ok(ExitCode::SUCCESS)
}
