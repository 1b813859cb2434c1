//! What several commands share: loading config and routes, and printing diagnostics
//! with paths relative to the current folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::diag::Report;
use crate::routes::{self, RouteSet};

pub fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// A path as a person would type it from here: relative when it is below the current folder.
pub fn shown(path: &Path) -> String {
    let cwd = cwd();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn print_report(report: &Report) {
    for d in &report.diagnostics {
        let mut d = d.clone();
        d.file = PathBuf::from(shown(&d.file));
        eprintln!("{d}");
    }
}

/// Config and routes, or every error of both printed to stderr.
pub fn load_all(config_path: &Path) -> Result<(Arc<Config>, RouteSet, Report), Report> {
    let (config, mut report) = Config::load(config_path, &cwd())?;
    match routes::load_dir(&config.server.routes_dir, &config) {
        Ok((set, more)) => {
            report.extend(more.diagnostics);
            Ok((Arc::new(config), set, report))
        }
        Err(more) => {
            report.extend(more.diagnostics);
            Err(report)
        }
    }
}

/// Prints the errors with a closing count; the caller exits 1.
pub fn refuse(report: &Report, what: &str) -> anyhow::Error {
    print_report(report);
    let n = report.error_count();
    anyhow::anyhow!(
        "{what}: {n} error{} in the config or route files",
        if n == 1 { "" } else { "s" }
    )
}
