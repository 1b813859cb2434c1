//! Route tables kept in the fleet's store (`[state] routes = "store"`). `banyan push`
//! sends a folder's files; the replica that receives them validates them as a reload
//! would, stores them whole as the next numbered table (a compare-and-swap on the table
//! it serves), serves them, and every other replica applies them from its watch.
//! `history` lists the tables, `revert` stores an old one again as the newest. Each
//! replica keeps the table it serves in `state/routes.json`: what it serves after a
//! restart while the store is away, never its folder's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::changes::{diff, percents};
use super::store::{Revision, StoreError};
use super::*;
use crate::routes::split::bp_to_percent;
use audit::Who;

pub const FILE_NAME: &str = "routes.json";
/// Files per table, and the table's text in all: etcd refuses requests over 1.5 MiB.
pub const MAX_FILES: usize = 256;
pub const MAX_TABLE_BYTES: usize = 1 << 20;

/// One stored route table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Table {
    /// 1 for the first table stored, then one more per push or revert.
    pub number: u64,
    /// File name → text; routes are read in file-name order, as from a folder.
    pub files: BTreeMap<String, String>,
    pub at: String,
    /// "cli" or "api" (a push or revert), or "seed" (the first replica's routes folder,
    /// stored when the store had no table).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The replica that validated and stored it.
    pub replica: String,
    pub reason: String,
    /// What changed from the table before it, one line per route.
    pub summary: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_from: Option<u64>,
}

/// A table as `banyan history` lists it: everything but the files' text.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TableInfo {
    pub number: u64,
    pub at: String,
    pub source: String,
    pub actor: Option<String>,
    pub replica: String,
    pub reason: String,
    pub summary: Vec<String>,
    pub files: Vec<String>,
    pub reverted_from: Option<u64>,
    /// The table this replica serves.
    pub current: bool,
}

impl Table {
    pub fn info(&self, serving: u64) -> TableInfo {
        TableInfo {
            number: self.number,
            at: self.at.clone(),
            source: self.source.clone(),
            actor: self.actor.clone(),
            replica: self.replica.clone(),
            reason: self.reason.clone(),
            summary: self.summary.clone(),
            files: self.files.keys().cloned().collect(),
            reverted_from: self.reverted_from,
            current: self.number == serving,
        }
    }
}

/// What a push or revert did.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pushed {
    pub number: u64,
    /// The store's revision of the write, which replicas acknowledge.
    pub revision: Revision,
    /// This replica's snapshot version serving it.
    pub version: u64,
    pub summary: Vec<String>,
    /// Which replicas serve it (filled in by the admin API after waiting).
    #[serde(default)]
    pub fleet: Option<store::Acks>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("route tables are kept in the store only with [state] store = \"etcd\" and routes = \"store\"; this replica reads its routes folder")]
    NotInStore,
    #[error("the route table is invalid; nothing was stored")]
    Invalid(Vec<String>),
    #[error("no route table number {0} in the store")]
    Unknown(u64),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A route file's name in a table: what a routes folder would read (`*.toml`, not hidden),
/// with no path in it.
pub fn file_name_ok(name: &str) -> bool {
    name.ends_with(".toml")
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The table this replica served last, from `state/routes.json`.
pub fn load_local(state_dir: &Path) -> Result<Option<Table>, String> {
    let path = state_dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a route table: {e}", path.display())),
    }
}

fn store_local(state_dir: &Path, table: &Table) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(table).map_err(std::io::Error::other)?;
    overrides::write_atomic(state_dir, FILE_NAME, &bytes)
}

/// A table's files as sources named `{routes_dir}/{file}`, so messages read as they
/// would for the folder.
fn sources(routes_dir: &Path, table: &BTreeMap<String, String>) -> Vec<(PathBuf, String)> {
    table
        .iter()
        .map(|(name, text)| (routes_dir.join(name), text.clone()))
        .collect()
}

/// Validates a table's files as a reload of the routes folder would.
pub fn validate(
    config: &crate::config::Config,
    files: &BTreeMap<String, String>,
) -> Result<(RouteSet, Arc<Matcher>), Vec<String>> {
    let mut errors = Vec::new();
    if files.is_empty() {
        errors.push("the table has no route files".to_string());
    }
    if files.len() > MAX_FILES {
        errors.push(format!(
            "{} files; a table holds at most {MAX_FILES}",
            files.len()
        ));
    }
    let bytes: usize = files.iter().map(|(n, t)| n.len() + t.len()).sum();
    if bytes > MAX_TABLE_BYTES {
        errors.push(format!(
            "{bytes} bytes of route files; a table holds at most {MAX_TABLE_BYTES}"
        ));
    }
    for name in files.keys().filter(|n| !file_name_ok(n)) {
        errors.push(format!(
            "`{name}`: route files are named NAME.toml with letters, digits, '-', '_' or '.'"
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (routes, _) =
        routes::load::load_sources(&sources(&config.server.routes_dir, files), config)
            .map_err(|r| report_lines(&r))?;
    let matcher = compile_matcher(&routes).map_err(|e| vec![e.to_string()])?;
    Ok((routes, matcher))
}

/// One line per route that appeared, disappeared or changed between two route sets.
pub fn summary(before: &RouteSet, after: &RouteSet) -> Vec<String> {
    let key = |d: &crate::routes::RouteDef| {
        let mut d = d.clone();
        d.file = PathBuf::new();
        (d.line, d.column) = (0, 0);
        format!("{d:?}")
    };
    let old: BTreeMap<&str, &crate::routes::RouteDef> = before
        .routes
        .iter()
        .map(|r| (r.name.as_str(), &**r))
        .collect();
    let new: BTreeMap<&str, &crate::routes::RouteDef> = after
        .routes
        .iter()
        .map(|r| (r.name.as_str(), &**r))
        .collect();
    let mut out = Vec::new();
    for (name, n) in &new {
        match old.get(name) {
            None => out.push(format!("+ {name} ({} %)", bp_to_percent(n.percent_bp))),
            Some(o) if o.percent_bp != n.percent_bp => {
                let mut same = (*o).clone();
                same.percent_bp = n.percent_bp;
                out.push(format!(
                    "~ {name}: {} % → {} %{}",
                    bp_to_percent(o.percent_bp),
                    bp_to_percent(n.percent_bp),
                    if key(&same) == key(n) {
                        ""
                    } else {
                        ", and more"
                    }
                ))
            }
            Some(o) if key(o) != key(n) => out.push(format!("~ {name}: changed")),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(format!("- {name}"));
    }
    if out.is_empty() {
        out.push("no route changed".to_string());
    }
    out
}

impl Control {
    /// Whether the route tables come from the store.
    pub fn routes_from_store(&self) -> bool {
        matches!(&self.config.state, crate::config::state::Store::Etcd(e) if e.routes_from_store)
    }

    /// The number of the stored table this replica serves (0: its routes folder).
    pub fn table_number(&self) -> u64 {
        self.lock().table
    }

    /// Validates `files`, stores them as the next table if the store still holds the
    /// table this replica serves, and serves them.
    pub fn push_routes(
        &self,
        files: BTreeMap<String, String>,
        reason: &str,
        who: &Who,
        reverted_from: Option<u64>,
    ) -> Result<Pushed, PushError> {
        if !self.routes_from_store() {
            return Err(PushError::NotInStore);
        }
        let mut st = self.lock();
        let (routes, matcher) = validate(&self.config, &files).map_err(PushError::Invalid)?;
        let mut table = Table {
            // Numbered by the store, after the last table it holds.
            number: 0,
            summary: summary(&st.routes, &routes),
            files,
            at: crate::clock::now_rfc3339(),
            source: who.source.as_str().to_string(),
            actor: who.actor.clone(),
            token: who.token.clone(),
            replica: self.store.fleet().replica,
            reason: reason.to_string(),
            reverted_from,
        };
        let revision = self.store.push_routes(&mut table)?;
        let version = self.serve_table(&mut st, &table, routes, matcher, who, revision);
        Ok(Pushed {
            number: table.number,
            revision,
            version,
            summary: table.summary,
            fleet: None,
        })
    }

    /// Stores an old table again as the newest.
    pub fn revert_routes(&self, number: u64, reason: &str, who: &Who) -> Result<Pushed, PushError> {
        if !self.routes_from_store() {
            return Err(PushError::NotInStore);
        }
        let old = self
            .store
            .route_tables()?
            .into_iter()
            .find(|t| t.number == number)
            .ok_or(PushError::Unknown(number))?;
        self.push_routes(old.files, reason, who, Some(number))
    }

    /// The stored tables, newest first, as history lists them.
    pub fn route_history(&self) -> Result<Vec<TableInfo>, PushError> {
        if !self.routes_from_store() {
            return Err(PushError::NotInStore);
        }
        let serving = self.table_number();
        Ok(self
            .store
            .route_tables()?
            .iter()
            .map(|t| t.info(serving))
            .collect())
    }

    /// A table read from the store at `revision` (another replica's push, or this
    /// one's coming back): served as a reload would be, unless it is already served.
    /// One this replica cannot compile keeps the table it serves, and says why.
    pub fn table_from_store(&self, table: Table, revision: Revision) -> Result<(), String> {
        let mut st = self.lock();
        if st.table == table.number {
            let version = self.shared.load().version;
            drop(st);
            self.store.routes_applied(table.number, revision, version);
            return Ok(());
        }
        let who = Who::from(Source::Fleet);
        match validate(&self.config, &table.files) {
            Ok((routes, matcher)) => {
                self.serve_table(&mut st, &table, routes, matcher, &who, revision);
                Ok(())
            }
            Err(errors) => {
                let why = format!("route table {}", table.number);
                let err = self.reload_failed(&mut st, &who, &why, errors);
                Err(format!(
                    "route table {} refused here: {}",
                    table.number,
                    err.errors.join("; ")
                ))
            }
        }
    }

    /// Serves a validated table: one snapshot swap, audited, kept in `routes.json`.
    fn serve_table(
        &self,
        st: &mut State,
        table: &Table,
        routes: RouteSet,
        matcher: Arc<Matcher>,
        who: &Who,
        revision: Revision,
    ) -> u64 {
        let old = self.shared.load_full();
        let before = percents(&old);
        let previous = std::mem::replace(&mut st.routes, routes);
        let previous_matcher = std::mem::replace(&mut st.matcher, matcher);
        st.generation += 1;
        st.loaded_at = SystemTime::now();
        let snapshot = match self.publish(st) {
            Ok(s) => s,
            Err(e) => {
                st.routes = previous;
                st.matcher = previous_matcher;
                st.generation -= 1;
                let why = format!("route table {}", table.number);
                self.reload_failed(st, who, &why, vec![e.to_string()]);
                return self.shared.load().version;
            }
        };
        st.table = table.number;
        st.last_reload_error = None;
        self.metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        if let Err(e) = store_local(&self.config.server.state_dir, table) {
            tracing::warn!("cannot keep the route table in {FILE_NAME}: {e}");
        }
        let mut entry = audit::Entry::by(
            who,
            "push",
            match (who.source, table.reverted_from) {
                (Source::Fleet, _) => format!("route table {} from the store", table.number),
                (_, Some(n)) => format!(
                    "route table {} (revert to {n}): {}",
                    table.number, table.reason
                ),
                _ => format!("route table {}: {}", table.number, table.reason),
            },
        );
        entry.generation = Some(st.generation);
        entry.changes = diff(&before, &percents(&snapshot));
        self.audit(&entry);
        tracing::info!(
            table = table.number,
            generation = st.generation,
            routes = snapshot.routes.len(),
            "serving route table {} ({})",
            table.number,
            table.summary.join(", ")
        );
        self.store
            .routes_applied(table.number, revision, snapshot.version);
        snapshot.version
    }

    /// The files this replica's routes are read from, for seeding an empty store.
    pub fn routes_folder_table(&self) -> Option<BTreeMap<String, String>> {
        let files = routes::load::route_files(&self.config.server.routes_dir).ok()?;
        let mut out = BTreeMap::new();
        for f in files {
            let name = f.file_name()?.to_str()?.to_string();
            out.insert(name, std::fs::read_to_string(&f).ok()?);
        }
        Some(out)
    }

    /// An empty store's first table: the routes this replica serves (the table it kept
    /// in `routes.json`, when the store lost it).
    pub fn seed_table(&self) -> Option<Table> {
        if self.lock().table != 0 {
            return load_local(&self.config.server.state_dir).ok().flatten();
        }
        let files = self.routes_folder_table()?;
        Some(Table {
            number: 1,
            summary: vec![format!("{} route files", files.len())],
            files,
            at: crate::clock::now_rfc3339(),
            source: "seed".to_string(),
            actor: None,
            token: None,
            replica: self.store.fleet().replica,
            reason: "the first replica's routes folder, stored when the store had no table"
                .to_string(),
            reverted_from: None,
        })
    }

    /// The store's first table was this replica's own folder: it serves table 1 now.
    pub fn seeded(&self, table: &Table, revision: Revision) {
        let mut st = self.lock();
        st.table = table.number;
        if let Err(e) = store_local(&self.config.server.state_dir, table) {
            tracing::warn!("cannot keep the route table in {FILE_NAME}: {e}");
        }
        let version = self.shared.load().version;
        drop(st);
        self.store.routes_applied(table.number, revision, version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain_toml_names() {
        assert!(file_name_ok("orders.toml"));
        assert!(file_name_ok("10-users_v2.toml"));
        for bad in [
            "../x.toml",
            "a/b.toml",
            ".hidden.toml",
            "x.yaml",
            "x y.toml",
            "",
        ] {
            assert!(!file_name_ok(bad), "{bad}");
        }
    }
}
