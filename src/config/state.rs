//! `[state]`: where routing state shared beyond this process lives. `files` (the default):
//! `overrides.json` and `audit.jsonl` in the state folder, one instance or instances
//! sharing the folder. `etcd`: a fleet of replicas sharing state through etcd v3, each
//! watching the prefix and announcing what it has applied.

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Files,
    Etcd(Etcd),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    /// `http://host:port` of etcd's client API.
    pub endpoints: Vec<String>,
    /// Every key under it; one fleet per prefix. No trailing '/'.
    pub prefix: String,
    /// This replica's name in the fleet (default: host name and proxy port).
    pub replica: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    store: Option<Spanned<String>>,
    endpoints: Option<Spanned<Vec<String>>>,
    prefix: Option<Spanned<String>>,
    replica: Option<Spanned<String>>,
    username: Option<String>,
    password: Option<String>,
}

/// The default replica name: the host's name and the first proxy port.
fn default_replica(port: Option<u16>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "banyan".to_string());
    match port {
        Some(p) => format!("{host}-{p}"),
        None => host,
    }
}

pub(super) fn validate_state(
    src: &mut SourceFile,
    raw: RawState,
    port: Option<u16>,
) -> Option<Store> {
    let kind = raw.store.as_ref().map_or("files", |s| s.get_ref().as_str());
    match kind {
        "files" => {
            if let Some(e) = &raw.endpoints {
                src.warning(
                    Some(e.span()),
                    "state.endpoints is read only with store = \"etcd\"",
                );
            }
            Some(Store::Files)
        }
        "etcd" => {
            let endpoints = raw
                .endpoints
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_default();
            let mut ok = true;
            if endpoints.is_empty() {
                src.error(
                    raw.store.as_ref().map(|s| s.span()),
                    "store = \"etcd\" needs state.endpoints, e.g. [\"http://127.0.0.1:2379\"]",
                );
                ok = false;
            }
            for e in &endpoints {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    src.error(
                        raw.endpoints.as_ref().map(|s| s.span()),
                        format!("state.endpoints: `{e}` must start with http:// or https://"),
                    );
                    ok = false;
                }
            }
            let prefix = raw.prefix.as_ref().map_or("/banyan".to_string(), |p| {
                p.get_ref().trim_end_matches('/').to_string()
            });
            if !prefix.starts_with('/') || prefix.len() < 2 {
                src.error(
                    raw.prefix.as_ref().map(|s| s.span()),
                    format!("state.prefix `{prefix}` must start with '/' and name a folder, e.g. \"/banyan/prod\""),
                );
                ok = false;
            }
            let replica = match &raw.replica {
                Some(r) if super::valid_name(r.get_ref()) => r.get_ref().clone(),
                Some(r) => {
                    src.error(
                        Some(r.span()),
                        format!(
                            "state.replica `{}`: use letters, digits, '-', '_' or '.'",
                            r.get_ref()
                        ),
                    );
                    ok = false;
                    String::new()
                }
                None => default_replica(port),
            };
            ok.then_some(Store::Etcd(Etcd {
                endpoints,
                prefix,
                replica,
                username: raw.username,
                password: raw.password,
            }))
        }
        other => {
            src.error(
                raw.store.as_ref().map(|s| s.span()),
                format!("state.store `{other}`: expected \"files\" or \"etcd\""),
            );
            None
        }
    }
}
