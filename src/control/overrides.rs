//! `state/overrides.json`: runtime decisions (rollback, manual percent) that win over the
//! route files until cleared. One entry per route:
//! `{"orders": {"percent": 0, "shadow": false, "trigger": "manual", "reason": "...", "at": "RFC 3339"}}`.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the folder), so a reader
//! (another instance sharing the folder, or this one after a crash) sees the old file
//! or the new one, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Override, Trigger};
use crate::routes::split::{bp_to_percent, percent_to_bp};

pub const FILE_NAME: &str = "overrides.json";
/// Larger override files are refused as corrupt; a real one is a few KB per hundred routes.
const MAX_FILE_BYTES: u64 = 8 << 20;

/// The file's entry, as written. Unknown fields are ignored so that a newer version's file
/// still loads; `percent` is the only required field.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    percent: f64,
    #[serde(default = "shadow_default")]
    shadow: bool,
    #[serde(default = "trigger_default")]
    trigger: Trigger,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    at: String,
}

fn shadow_default() -> bool {
    true
}

fn trigger_default() -> Trigger {
    Trigger::Manual
}

/// All overrides, by route name.
pub type Overrides = BTreeMap<String, Override>;

#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid overrides file: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Parses the file's text. Every entry must be valid, or the whole file is refused: a
/// half-applied set of rollbacks is worse than keeping the last good one.
pub fn parse(path: &Path, text: &str) -> Result<Overrides, OverridesError> {
    let invalid = |message: String| OverridesError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Overrides::new());
    }
    let raw: BTreeMap<String, Entry> =
        serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut out = Overrides::new();
    for (route, e) in raw {
        let percent_bp = percent_to_bp(e.percent).ok_or_else(|| {
            invalid(format!(
                "route `{route}`: percent {} is not between 0 and 100 with two decimals",
                e.percent
            ))
        })?;
        out.insert(
            route,
            Override {
                percent_bp,
                shadow: e.shadow,
                trigger: e.trigger,
                reason: e.reason,
                at: e.at,
            },
        );
    }
    Ok(out)
}

/// Reads the overrides of a state folder; a missing file is no overrides.
pub fn load(state_dir: &Path) -> Result<Overrides, OverridesError> {
    let path = path_in(state_dir);
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::new()),
        Err(source) => return Err(OverridesError::Read { path, source }),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(OverridesError::Invalid {
            message: format!("{} bytes is more than an overrides file can be", meta.len()),
            path,
        });
    }
    let bytes = fs::read(&path).map_err(|source| OverridesError::Read {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| OverridesError::Invalid {
        path: path.clone(),
        message: "not UTF-8 text".to_string(),
    })?;
    parse(&path, &text)
}

pub fn render(overrides: &Overrides) -> String {
    let raw: BTreeMap<&str, Entry> = overrides
        .iter()
        .map(|(route, o)| {
            (
                route.as_str(),
                Entry {
                    percent: bp_to_percent(o.percent_bp),
                    shadow: o.shadow,
                    trigger: o.trigger,
                    reason: o.reason.clone(),
                    at: o.at.clone(),
                },
            )
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&raw).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

/// Writes the overrides atomically: temporary file in the same folder, fsync, rename over
/// the old file, fsync of the folder so the rename itself survives a crash.
pub fn store(state_dir: &Path, overrides: &Overrides) -> Result<(), OverridesError> {
    write_atomic(state_dir, FILE_NAME, render(overrides).as_bytes()).map_err(|source| {
        OverridesError::Write {
            path: path_in(state_dir),
            source,
        }
    })
}

/// Replaces `dir/name` with `bytes` so that a reader sees the old file or the new one:
/// a temporary file, fsync, rename, fsync of the folder.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        fastrand::u32(..)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether a path in the state folder is the overrides file (not our temporary files).
pub fn is_overrides_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_format_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = Overrides::new();
        o.insert(
            "orders".into(),
            Override::new(0, false, Trigger::Manual, "bad deploy"),
        );
        o.insert(
            "users".into(),
            Override::new(1250, true, Trigger::Guard, "p99 1200 ms > 800 ms"),
        );
        store(dir.path(), &o).expect("store");
        let text = fs::read_to_string(path_in(dir.path())).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["orders"]["percent"], 0.0);
        assert_eq!(v["orders"]["shadow"], false);
        assert_eq!(v["orders"]["trigger"], "manual");
        assert_eq!(v["orders"]["reason"], "bad deploy");
        assert!(humantime::parse_rfc3339_weak(v["orders"]["at"].as_str().expect("at")).is_ok());
        assert_eq!(v["users"]["percent"], 12.5);
        assert_eq!(load(dir.path()).expect("load"), o);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn a_hand_written_rollback_is_enough() {
        let o = parse(Path::new("o.json"), r#"{"orders": {"percent": 0}}"#).expect("valid");
        let e = &o["orders"];
        assert_eq!(
            (e.percent_bp, e.shadow, e.trigger),
            (0, true, Trigger::Manual)
        );
        assert_eq!(e.age_seconds(), None);
    }

    #[test]
    fn missing_and_empty_files_are_no_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("missing").is_empty());
        fs::write(path_in(dir.path()), "  \n").expect("write");
        assert!(load(dir.path()).expect("empty").is_empty());
    }

    #[test]
    fn corrupt_files_are_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [
            "{\"orders\": {\"percent\": 0}",
            "[1, 2]",
            "{\"orders\": {\"percent\": 150}}",
            "{\"orders\": {\"percent\": 0}, \"users\": {\"shadow\": false}}",
            "{\"orders\": {\"percent\": 0, \"trigger\": \"robot\"}}",
        ] {
            fs::write(path_in(dir.path()), bad).expect("write");
            let e = load(dir.path()).expect_err(bad);
            assert!(
                e.to_string().contains("is not a valid overrides file"),
                "{e}"
            );
        }
        fs::write(path_in(dir.path()), [0xff, 0xfe, 0x00]).expect("write");
        assert!(load(dir.path()).is_err());
    }
}
