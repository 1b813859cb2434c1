//! What the desired state was read from: the route files' and `overrides.json`'s names,
//! sizes and modification times, so the watcher can tell a real change from a touch.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::overrides;
use crate::routes;

/// Names, sizes and modification times of the files the desired state was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub(super) routes: Vec<(PathBuf, u64, Option<SystemTime>)>,
    pub(super) overrides: Option<(u64, Option<SystemTime>)>,
}

fn file_meta(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

impl Fingerprint {
    pub fn take(routes_dir: &Path, state_dir: &Path) -> Fingerprint {
        let routes = routes::load::route_files(routes_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let (len, at) = file_meta(&p).unwrap_or((0, None));
                (p, len, at)
            })
            .collect();
        Fingerprint {
            routes,
            overrides: file_meta(&overrides::path_in(state_dir)),
        }
    }
}
