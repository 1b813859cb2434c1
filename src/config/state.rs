//! `[state]`: where routing state shared beyond this process lives. `files` (the default):
//! `overrides.json` and `audit.jsonl` in the state folder, one instance or instances
//! sharing the folder. `etcd`: a fleet of replicas sharing state through etcd v3, each
//! watching the prefix and announcing what it has applied; with `routes = "store"` the
//! route tables are fleet state too (`banyan push`), else each replica reads its folder.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceFile;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Files,
    Etcd(Box<Etcd>),
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
    /// Where the route tables come from: the routes folder, or the store (`banyan push`).
    pub routes_from_store: bool,
    /// etcd over https: the CA that signed etcd's certificate, and this replica's client
    /// certificate when etcd asks for one.
    pub tls: Option<EtcdTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name etcd's certificate is checked against (default: the endpoint's host).
    pub server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    ca: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    server_name: Option<String>,
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
    routes: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
}

/// The default replica name: the host's name and the first proxy port.
pub fn default_replica(port: Option<u16>) -> String {
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
    base: &std::path::Path,
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
            if raw.routes.as_ref().is_some_and(|r| r.get_ref() == "store") {
                src.error(
                    raw.routes.as_ref().map(|s| s.span()),
                    "state.routes = \"store\" needs store = \"etcd\": with files, the routes folder is the route table",
                );
                return None;
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
            let routes_from_store = match raw.routes.as_ref().map(|r| r.get_ref().as_str()) {
                None | Some("files") => false,
                Some("store") => true,
                Some(other) => {
                    src.error(
                        raw.routes.as_ref().map(|s| s.span()),
                        format!("state.routes `{other}`: expected \"files\" (each replica reads its routes folder) or \"store\" (`banyan push`)"),
                    );
                    ok = false;
                    false
                }
            };
            let tls = raw.tls.map(|t| {
                let span = t.span();
                let t = t.into_inner();
                if t.client_cert.is_some() != t.client_key.is_some() {
                    src.error(
                        Some(span.clone()),
                        "state.tls: client_cert and client_key go together",
                    );
                    ok = false;
                }
                if !endpoints.iter().all(|e| e.starts_with("https://")) {
                    src.error(
                        Some(span),
                        "state.tls is for https:// endpoints: every endpoint must start with https://",
                    );
                    ok = false;
                }
                let path = |p: Option<String>| p.map(|p| super::validate::resolve_path(base, &p));
                EtcdTls {
                    ca: path(t.ca),
                    client_cert: path(t.client_cert),
                    client_key: path(t.client_key),
                    server_name: t.server_name,
                }
            });
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
            ok.then_some(Store::Etcd(Box::new(Etcd {
                endpoints,
                prefix,
                replica,
                username: raw.username,
                password: raw.password,
                routes_from_store,
                tls,
            })))
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
