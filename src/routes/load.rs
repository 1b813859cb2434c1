//! Reading a routes folder: every `*.toml` file, in file-name order, each route validated
//! on its own, then the rules that need the whole set (unique names, ambiguous matches).
//! All problems of the set are reported, not only the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::DeValue;

use super::def::{self, PathMatch, RouteDef};
use super::spec::{RouteSpec, ROUTE_SHAPE};
use crate::config::Config;
use crate::diag::{Diagnostic, Report, Severity, SourceFile};
use crate::tomlspan;

/// A route file larger than this is refused rather than parsed.
pub const MAX_ROUTE_FILE_BYTES: u64 = 16 << 20;

/// The routes of one folder, in precedence-relevant order: files by name, then position.
#[derive(Debug, Clone, Default)]
pub struct RouteSet {
    /// Shared with every snapshot compiled from this set, never copied.
    pub routes: Vec<Arc<RouteDef>>,
    pub files: Vec<PathBuf>,
}

/// The `*.toml` files of a routes folder, sorted by name. Hidden entries are skipped, which
/// also skips the `..data` folders of a Kubernetes ConfigMap mount (its files are
/// symlinks at the top level and are followed). A `*.toml` entry that cannot be read as a
/// file (a dangling symlink, no permission) is listed all the same, so that reading it
/// fails the load instead of its routes silently vanishing.
pub fn route_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads and validates every route file of `dir`.
pub fn load_dir(dir: &Path, config: &Config) -> Result<(RouteSet, Report), Report> {
    let files = match route_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return Err(Report::whole_file_error(
                dir,
                format!("cannot read the routes folder: {e}"),
            ))
        }
    };
    let mut sources = Vec::with_capacity(files.len());
    let mut report = Report::default();
    for path in files {
        match read_text(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => report.extend(Report::whole_file_error(&path, e.to_string()).diagnostics),
        }
    }
    let result = load_sources(&sources, config);
    match result {
        Ok((set, more)) if !report.has_errors() => {
            report.extend(more.diagnostics);
            Ok((set, report))
        }
        Ok((_, more)) | Err(more) => {
            report.extend(more.diagnostics);
            Err(report)
        }
    }
}

/// Why a route file's text could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is {0} bytes; route files are limited to {MAX_ROUTE_FILE_BYTES} bytes")]
    TooLarge(u64),
    #[error("the file is not UTF-8 text")]
    NotText,
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_ROUTE_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// Validates route files given as (path, text), in the order given.
pub fn load_sources(
    sources: &[(PathBuf, String)],
    config: &Config,
) -> Result<(RouteSet, Report), Report> {
    let mut report = Report::default();
    let mut routes = Vec::new();
    for (path, text) in sources {
        let mut src = SourceFile::new(path, text);
        parse_file(&mut src, text, config, &mut routes);
        report.extend(src.diagnostics);
    }
    report.extend(check_unique_names(&routes));
    report.extend(check_ambiguous(&routes));
    if report.has_errors() {
        return Err(report);
    }
    let files = sources.iter().map(|(p, _)| p.clone()).collect();
    let routes = routes.into_iter().map(Arc::new).collect();
    Ok((RouteSet { routes, files }, report))
}

fn parse_file(src: &mut SourceFile, text: &str, config: &Config, out: &mut Vec<RouteDef>) {
    let Some(doc) = tomlspan::parse_document(src, text) else {
        return;
    };
    if doc.is_empty() {
        // Valid, but more often a truncated ConfigMap or template than an intent.
        src.warning(None, "the file holds no routes");
        return;
    }
    for (_, value) in tomlspan::split_top_level(src, doc, &["route"]) {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            src.error(Some(span), "`route` must be written as [[route]] tables");
            continue;
        };
        for mut item in items {
            let dropped = tomlspan::drop_unknown(src, &mut item, &ROUTE_SHAPE);
            if let Some(spec) = tomlspan::deserialize::<RouteSpec>(src, item) {
                if let Some(route) = def::validate(src, spec, config, &dropped) {
                    out.push(route);
                }
            }
        }
    }
}

fn at(route: &RouteDef, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: route.file.clone(),
        line: route.line,
        column: route.column,
        message,
    }
}

fn location(route: &RouteDef) -> String {
    format!("{}:{}", route.file.display(), route.line)
}

fn check_unique_names(routes: &[RouteDef]) -> Vec<Diagnostic> {
    let mut first: HashMap<&str, &RouteDef> = HashMap::new();
    let mut out = Vec::new();
    for r in routes {
        if let Some(prev) = first.get(r.name.as_str()) {
            out.push(at(
                r,
                format!(
                    "route name `{}` is already used at {}",
                    r.name,
                    location(prev)
                ),
            ));
        } else {
            first.insert(&r.name, r);
        }
    }
    out
}

/// Two routes with the same path, the same number of conditions and conditions that one
/// request could satisfy together: nothing decides between them.
fn check_ambiguous(routes: &[RouteDef]) -> Vec<Diagnostic> {
    let mut by_path: HashMap<&PathMatch, Vec<&RouteDef>> = HashMap::new();
    for r in routes {
        by_path.entry(&r.path).or_default().push(r);
    }
    let mut out = Vec::new();
    for r in routes {
        let same = &by_path[&r.path];
        if let Some(earlier) = same
            .iter()
            .take_while(|o| !std::ptr::eq(**o, r))
            .find(|o| o.condition_count() == r.condition_count() && o.conditions_overlap(r))
        {
            out.push(at(
                r,
                format!(
                    "route `{}` is ambiguous with `{}` ({}): both match {} with {} condition(s); add a host, methods or headers condition to one of them",
                    r.name,
                    earlier.name,
                    location(earlier),
                    r.path.describe(),
                    r.condition_count()
                ),
            ));
        }
    }
    out
}
