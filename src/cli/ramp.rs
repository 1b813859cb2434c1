//! `banyan ramp start|pause|resume|abort ROUTE` and `banyan promote ROUTE [--full]`: a
//! route's `[route.ramp]`, through the admin API. `banyan status` shows where it stands.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::{json, Value};

use super::client::{Admin, AdminArgs};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Verb {
    /// From its first step, judged every second.
    Start,
    /// Hold the current step; nothing advances or fails.
    Pause,
    /// Judge again (a manual `set` or a rollback pauses a ramp).
    Resume,
    /// Stop: the route file's percent again.
    Abort,
}

#[derive(clap::Args)]
pub struct RampArgs {
    #[arg(value_enum)]
    verb: Verb,
    /// The route, as its file names it.
    route: String,
    /// Why, for status and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The route, as its file names it.
    route: String,
    /// Straight to the last step instead of the next one.
    #[arg(long)]
    full: bool,
    /// Why, for status and the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

fn moved(route: &str, answer: Result<Value, super::client::CallError>) -> anyhow::Result<ExitCode> {
    match answer {
        Ok(a) => {
            println!(
                "{route}: ramp {}, step {}: {}% → {}%",
                a["state"].as_str().unwrap_or("?"),
                a["step"],
                a["percent_before"],
                a["percent_after"]
            );
            if !super::overrides::print_fleet(&a) {
                eprintln!("banyan: the move is in the store, but not every replica serves it yet");
                return Ok(ExitCode::from(super::overrides::NOT_EVERYWHERE));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => bail!("{e}"),
    }
}

pub fn ramp(args: &RampArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let verb = format!("{:?}", args.verb).to_lowercase();
    let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
    let path = format!("/api/v1/routes/{}/ramp/{verb}", args.route);
    moved(&args.route, admin.call("POST", &path, body))
}

pub fn promote(args: &PromoteArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.admin)?;
    let body = json!({ "reason": args.reason, "full": args.full });
    let path = format!("/api/v1/routes/{}/promote", args.route);
    moved(&args.route, admin.call("POST", &path, Some(body)))
}

/// `banyan status`'s ramps: each declared ramp's step, time at it, the next step's
/// earliest time, and each gate's figure against its limit.
pub fn print_ramps(status: &crate::admin::status::Status) {
    let ramps: Vec<_> = status
        .routes
        .iter()
        .filter_map(|r| Some((&r.name, r.ramp.as_ref()?)))
        .collect();
    if ramps.is_empty() {
        return;
    }
    println!();
    println!("ramps:");
    for (name, r) in ramps {
        let steps: Vec<String> = r.steps.iter().map(|s| format!("{s}")).collect();
        let at = r.percent.map_or(String::new(), |p| format!(" at {p}%"));
        let mut line = format!(
            "  {name}: {}{at}, step {} of {} [{}]",
            r.state,
            r.step,
            r.steps.len(),
            steps.join(" → ")
        );
        if r.state == "running" || r.state == "paused" {
            line.push_str(&format!(
                ", {:.0}s at it (hold {:.0}s)",
                r.at_step_seconds, r.hold_seconds
            ));
        }
        if let Some(n) = r.next_step_in_seconds {
            line.push_str(&format!(", next step in ≥ {n:.0}s"));
        }
        println!("{line}");
        if let Some(v) = &r.verdict {
            match (&r.judged_by, r.judged_replicas) {
                (Some(by), Some(n)) => println!("    {v} (judged by {by} on {n} replicas' counts)"),
                _ => println!("    {v}"),
            }
        }
        for g in &r.gates {
            use crate::control::ramp::judge::Result as R;
            let result = match g.result {
                R::Pass => "pass",
                R::Fail => "FAIL",
                R::Inconclusive => "inconclusive",
            };
            println!("    {result:<12} {}", g.describe());
        }
        if !r.reason.is_empty() {
            println!("    last change: {}", r.reason);
        }
    }
}
