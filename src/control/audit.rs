//! `state/audit.jsonl`: one JSON line per change of routing state — each reload (good or
//! bad) and each override set or cleared — with time, source, reason and the route's
//! percent before and after. Appended with one `write` on an `O_APPEND` file, so lines of
//! several writers (instances sharing the folder, the CLI offline) do not interleave.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::clock::now_rfc3339;

pub const FILE_NAME: &str = "audit.jsonl";

/// Who changed the routing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Route files or overrides.json changed on disk (watcher, SIGHUP, start).
    File,
    /// The admin API.
    Api,
    /// The command line (through the API, or writing overrides.json itself).
    Cli,
    /// An automatic rollback.
    Guard,
    /// Another replica of the fleet, through the state store.
    Fleet,
    /// A ramp moving by itself: a step passed, or a gate failed.
    Ramp,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Cli => "cli",
            Source::Guard => "guard",
            Source::Fleet => "fleet",
            Source::Ramp => "ramp",
        }
    }
}

/// Who asked for a change: where it came from and, when known, the person (the CLI's
/// `--actor`) and the named admin token they used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub source: Source,
    pub actor: Option<String>,
    pub token: Option<String>,
    /// Apply on this replica alone, without the shared store (`rollback --direct`): it
    /// is shared when the store can be reached, unless the store changed meanwhile.
    pub here_only: bool,
}

impl From<Source> for Who {
    fn from(source: Source) -> Who {
        Who {
            source,
            actor: None,
            token: None,
            here_only: false,
        }
    }
}

/// A route's effective percent before and after a reload; `None` where it did not exist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub route: String,
    pub percent_before: Option<f64>,
    pub percent_after: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    pub at: String,
    pub source: Source,
    /// The person, as the CLI names them (`--actor`, `BANYAN_ACTOR`, the OS user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The name of the admin token the change came with (`[admin.tokens]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// "reload", "set", "rollback", "resume", "overrides".
    pub action: &'static str,
    /// "ok" or "error".
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_after: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A ramp's gates when it moved: the figures that justified the move.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::ramp::judge::Gate>,
}

impl Entry {
    /// An entry naming who acted.
    pub fn by(who: &Who, action: &'static str, reason: impl Into<String>) -> Self {
        let mut e = Entry::new(who.source, action, reason);
        e.actor = who.actor.clone();
        e.token = who.token.clone();
        e
    }

    pub fn new(source: Source, action: &'static str, reason: impl Into<String>) -> Self {
        Entry {
            at: now_rfc3339(),
            source,
            actor: None,
            token: None,
            action,
            result: "ok",
            route: None,
            reason: reason.into(),
            percent_before: None,
            percent_after: None,
            changes: Vec::new(),
            generation: None,
            error: None,
            gates: Vec::new(),
        }
    }
}

/// Appends one entry. The audit log is a record, not a gate: the caller logs a failure
/// and carries on.
pub fn append(state_dir: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::create_dir_all(state_dir)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join(FILE_NAME))?;
    f.write_all(&line)
}

/// The last `limit` entries of an audit file, oldest first; unreadable lines are skipped.
/// Reads at most the file's last 4 MiB.
pub fn tail(path: &Path, limit: usize) -> Vec<serde_json::Value> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(4 << 20);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    let start = lines.len().saturating_sub(limit);
    lines[start..]
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_one_json_line_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = Entry::new(Source::Api, "rollback", "bad deploy");
        e.route = Some("orders".into());
        e.percent_before = Some(25.0);
        e.percent_after = Some(0.0);
        append(dir.path(), &e).expect("append");
        let mut r = Entry::new(Source::File, "reload", "routes changed");
        r.changes.push(Change {
            route: "users".into(),
            percent_before: None,
            percent_after: Some(5.0),
        });
        r.generation = Some(2);
        append(dir.path(), &r).expect("append");
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["source"], "api");
        assert_eq!(lines[0]["route"], "orders");
        assert_eq!(lines[0]["percent_before"], 25.0);
        assert_eq!(lines[0]["percent_after"], 0.0);
        assert_eq!(lines[1]["changes"][0]["percent_after"], 5.0);
        assert!(lines[1]["changes"][0]["percent_before"].is_null());
        assert_eq!(lines[1]["generation"], 2);
        let last = tail(&dir.path().join(FILE_NAME), 1);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["action"], "reload");
        assert_eq!(tail(&dir.path().join(FILE_NAME), 10).len(), 2);
    }
}
