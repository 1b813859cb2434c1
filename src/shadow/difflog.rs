//! The mismatch log: `state/diffs.jsonl`, one JSON object per mismatch, rotated by size
//! (one previous file kept as `diffs.jsonl.1`), plus the most recent records in memory for
//! `GET /api/v1/diffs`. Shadow tasks hand records over and never wait for the disk: a
//! writer thread appends them, and when it falls behind, records are dropped and counted.
//!
//! What is never written: request bodies, request headers, query strings (unless
//! `shadow.log_query = true`), and the values of sensitive headers.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "diffs.jsonl";
/// Records kept in memory for the API.
pub const RECENT: usize = 1000;
/// Records waiting for the writer thread before new ones are dropped.
const QUEUE: usize = 4096;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DiffRecord {
    pub time: String,
    pub route: String,
    pub method: String,
    /// Without the query string unless the config asks for it.
    pub path: String,
    pub request_id: String,
    pub legacy_status: u16,
    pub shadow_status: u16,
    pub differences: Vec<DiffEntry>,
    /// Differences beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct DiffEntry {
    /// "status", "header:NAME", a JSON pointer, or "body".
    pub field: String,
    /// Shortened; absent when the field is missing on that side.
    pub legacy: Option<String>,
    pub shadow: Option<String>,
}

pub struct DiffLog {
    path: PathBuf,
    max_bytes: u64,
    recent: Mutex<VecDeque<Arc<DiffRecord>>>,
    /// Started on the first record, so no thread exists before the server forks or runs.
    writer: OnceLock<Option<SyncSender<Vec<u8>>>>,
    lost: AtomicU64,
}

impl DiffLog {
    /// Opens the log in `state_dir`, loading the newest records already on disk.
    pub fn open(state_dir: &Path, max_bytes: u64) -> DiffLog {
        let path = state_dir.join(FILE_NAME);
        let mut recent = VecDeque::with_capacity(RECENT);
        for file in [rotated(&path), path.clone()] {
            let Ok(f) = File::open(&file) else { continue };
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                if let Ok(r) = serde_json::from_str::<DiffRecord>(&line) {
                    if recent.len() == RECENT {
                        recent.pop_front();
                    }
                    recent.push_back(Arc::new(r));
                }
            }
        }
        DiffLog {
            path,
            max_bytes: max_bytes.max(4096),
            recent: Mutex::new(recent),
            writer: OnceLock::new(),
            lost: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the record in memory and queues it for the file; never blocks on the disk.
    pub fn append(&self, record: DiffRecord) {
        let line = serde_json::to_vec(&record).map(|mut l| {
            l.push(b'\n');
            l
        });
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::new(record));
        }
        let Ok(line) = line else { return };
        let Some(tx) = self.writer.get_or_init(|| self.start_writer()) else {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn start_writer(&self) -> Option<SyncSender<Vec<u8>>> {
        let (tx, rx) = sync_channel(QUEUE);
        let path = self.path.clone();
        let max = self.max_bytes;
        match std::thread::Builder::new()
            .name("banyan-diffs".into())
            .spawn(move || write_loop(&path, max, rx))
        {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("cannot start the diff log writer: {e}");
                None
            }
        }
    }

    /// Newest first, optionally for one route.
    pub fn recent(&self, route: Option<&str>, limit: usize) -> Vec<Arc<DiffRecord>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .rev()
            .filter(|r| route.is_none_or(|name| r.route == name))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records that could not be queued for the file (they are still in memory).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

fn write_loop(path: &Path, max_bytes: u64, rx: Receiver<Vec<u8>>) {
    crate::priority::lower_this_thread();
    let mut file: Option<(File, u64)> = None;
    let mut warned = false;
    while let Ok(line) = rx.recv() {
        // The line that would overflow the file goes to a fresh one, opened below.
        if file
            .as_ref()
            .is_some_and(|(_, len)| *len > 0 && *len + line.len() as u64 > max_bytes)
        {
            if let Err(e) = std::fs::rename(path, rotated(path)) {
                tracing::warn!("cannot rotate {}: {e}", path.display());
            }
            file = None;
        }
        if file.is_none() {
            file = match open_append(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "cannot open {}: {e}; mismatches stay in memory only",
                            path.display()
                        );
                        warned = true;
                    }
                    None
                }
            };
        }
        let Some((f, len)) = file.as_mut() else {
            continue;
        };
        match f.write_all(&line) {
            Ok(()) => *len += line.len() as u64,
            Err(e) => tracing::warn!("cannot append to {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(route: &str, n: usize) -> DiffRecord {
        DiffRecord {
            time: "2026-11-22T10:00:00.000Z".into(),
            route: route.into(),
            method: "GET".into(),
            path: format!("/api/{n}"),
            request_id: format!("r{n}"),
            legacy_status: 200,
            shadow_status: 200,
            differences: vec![DiffEntry {
                field: "/price".into(),
                legacy: Some("12.5".into()),
                shadow: Some("13".into()),
            }],
            more: 0,
        }
    }

    fn wait_for_lines(path: &Path, n: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let lines = std::fs::read_to_string(path)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if lines >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn records_are_kept_filtered_written_rotated_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = DiffLog::open(dir.path(), 4096);
        for n in 0..5 {
            log.append(record(if n % 2 == 0 { "orders" } else { "users" }, n));
        }
        let orders = log.recent(Some("orders"), 10);
        assert_eq!(
            orders
                .iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r4", "r2", "r0"]
        );
        assert_eq!(log.recent(None, 2).len(), 2);
        assert_eq!(wait_for_lines(log.path(), 5), 5);
        // About 200 bytes a record: 4 KiB rotates after about 20.
        for n in 5..60 {
            log.append(record("orders", n));
        }
        // The writer may still be behind; wait until the last record is on disk. Until
        // then the file can be missing for a moment, between a rotation's rename and the
        // new file's creation.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            if text.contains("\"r59\"") || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(rotated(log.path()).exists());
        let size = std::fs::metadata(log.path()).expect("log").len();
        assert!(size <= 4096, "{size}");
        let again = DiffLog::open(dir.path(), 4096);
        let newest = again.recent(None, 1);
        assert_eq!(newest[0].request_id, "r59");
        assert!(again.recent(None, RECENT).len() > 10);
        assert_eq!(log.lost(), 0);
    }
}
