//! `banyan diffs [route] [--limit N]`: recent shadow mismatches, for a person. Asks the
//! admin API; when no proxy answers, reads the diff log in the state folder instead (so
//! the evidence is there during an outage too). Oldest first, so the newest is last on
//! screen.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use super::client::{Admin, AdminArgs, CallError};
use crate::shadow::difflog::{DiffLog, DiffRecord};

#[derive(clap::Args)]
pub struct Args {
    /// Only this route's mismatches.
    route: Option<String>,
    /// How many, newest (up to 1000).
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Print JSON lines, as in the diff log.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

fn print_record(r: &DiffRecord) {
    println!(
        "{}  {}  {} {}  legacy {} · shadow {}  request {}",
        r.time, r.route, r.method, r.path, r.legacy_status, r.shadow_status, r.request_id
    );
    let width = r
        .differences
        .iter()
        .map(|d| d.field.chars().count())
        .max()
        .unwrap_or(0);
    let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
    for d in &r.differences {
        let pad = " ".repeat(width - d.field.chars().count());
        println!(
            "    {}{pad}  legacy {}  ·  shadow {}",
            d.field,
            shown(&d.legacy),
            shown(&d.shadow)
        );
    }
    if r.more > 0 {
        println!("    … and {} more", r.more);
    }
}

pub fn diffs(args: &Args) -> anyhow::Result<ExitCode> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let admin = Admin::new(&args.admin)?;
    let mut path = format!("/api/v1/diffs?limit={}", args.limit);
    if let Some(r) = &args.route {
        path.push_str(&format!("&route={r}"));
    }
    let records: Vec<DiffRecord> = match admin.call("GET", &path, None) {
        Ok(v) => serde_json::from_value(v.get("diffs").cloned().unwrap_or(Value::Null))?,
        Err(CallError::Unreachable { at, why }) => {
            let log = DiffLog::open(&admin.settings(&why)?.state_dir, u64::MAX);
            eprintln!(
                "banyan: cannot reach the admin API at {at}: {why}; reading {}",
                log.path().display()
            );
            log.recent(args.route.as_deref(), args.limit)
                .iter()
                .map(|r| (**r).clone())
                .collect()
        }
        Err(e) => bail!("{e}"),
    };
    if records.is_empty() {
        if !args.json {
            match &args.route {
                Some(r) => println!("no mismatches recorded for route `{r}`"),
                None => println!("no mismatches recorded"),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for r in records.iter().rev() {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            print_record(r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
