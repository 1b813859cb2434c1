//! The command line: parse, then dispatch to one file per command. Exit status: 0 done,
//! 1 failed (with a one-line reason), 2 usage.

mod check;
mod client;
mod common;
mod diffs;
mod explain;
mod overrides;
mod ramp;
mod run;
mod status;
mod tables;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;
use crate::logging::Format;

#[derive(Parser)]
#[command(
    name = "banyan",
    version,
    about = "Incremental migration proxy for the strangler-fig pattern"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// The proxy's config file; relative paths in it resolve against the current folder
    /// (default: BANYAN_CONFIG, then config/banyan.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config file to serve or check: it must exist.
    fn path(&self) -> anyhow::Result<PathBuf> {
        client::find_config(self.config.as_deref())?.ok_or_else(|| {
            anyhow::anyhow!(
                "no config file: looked for {DEFAULT_CONFIG_PATH} in {}; pass --config FILE or set {}",
                common::cwd().display(),
                client::CONFIG_ENV
            )
        })
    }
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Application log lines: readable text, or one JSON object per line (default: text,
    /// or BANYAN_LOG_FORMAT).
    #[arg(long, value_enum)]
    log_format: Option<crate::logging::Format>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy listeners and the admin API.
    Run(ServeArgs),
    /// Serve the example config with built-in demo upstreams on its loopback peers.
    Demo(ServeArgs),
    /// Validate the config and route files; exit 1 with file:line:column errors.
    Check(ConfigArg),
    /// Which route, bucket and backend a request would get. Sends nothing.
    Explain(explain::Args),
    /// Routes, percents, overrides and live rates of a running proxy.
    Status(status::Args),
    /// Override a route's percent until resumed.
    Set(overrides::SetArgs),
    /// Percent 0 and shadow paused for routes (or --all), until resumed.
    Rollback(overrides::RollbackArgs),
    /// Clear overrides: the route files decide again.
    Resume(overrides::ResumeArgs),
    /// Recent shadow mismatches: what differed between legacy and the new service.
    Diffs(diffs::Args),
    /// Store a folder of route files as the fleet's next route table ([state] routes = "store").
    Push(tables::PushArgs),
    /// The fleet's route tables, newest first: who pushed each, when, and what changed.
    History(tables::HistoryArgs),
    /// Serve an old route table again, stored as the newest.
    Revert(tables::RevertArgs),
    /// The latest changes of routing state (the fleet's, with etcd).
    Audit(tables::AuditArgs),
    /// Start, pause, resume or abort a route's [route.ramp].
    Ramp(ramp::RampArgs),
    /// A ramp's next step now (--full: its last), without waiting for its gates.
    Promote(ramp::PromoteArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    let result = match cli.command {
        Command::Run(a) => a
            .config
            .path()
            .and_then(|p| run::run(&p, false, Format::choose(a.log_format))),
        Command::Demo(a) => a
            .config
            .path()
            .and_then(|p| run::run(&p, true, Format::choose(a.log_format))),
        Command::Check(a) => a.path().and_then(|p| check::check(&p)),
        Command::Explain(a) => explain::explain(&a),
        Command::Status(a) => status::status(&a),
        Command::Set(a) => overrides::set(&a),
        Command::Rollback(a) => overrides::rollback(&a),
        Command::Resume(a) => overrides::resume(&a),
        Command::Diffs(a) => diffs::diffs(&a),
        Command::Push(a) => tables::push(&a),
        Command::History(a) => tables::history(&a),
        Command::Revert(a) => tables::revert(&a),
        Command::Audit(a) => tables::audit(&a),
        Command::Ramp(a) => ramp::ramp(&a),
        Command::Promote(a) => ramp::promote(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("banyan: {e:#}");
            ExitCode::from(1)
        }
    }
}
