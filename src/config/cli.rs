//! The few settings the command line reads, leniently.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::validate::resolve_path;

/// What the command line needs from the config, read leniently: only these keys, no
/// validation and no DNS, so that `banyan rollback` works during an incident even when
/// other parts of the config (or name resolution) are broken.
#[derive(Debug, Clone)]
pub struct CliSettings {
    pub admin_listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub routes_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Why the command line could not read its settings.
#[derive(Debug, thiserror::Error)]
pub enum CliConfigError {
    #[error("cannot read {}: {source}", .file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", .file.display())]
    Toml { file: PathBuf, message: String },
    #[error("{}: admin.listen `{listen}` is not an address and port", .file.display())]
    AdminListen { file: PathBuf, listen: String },
}

impl CliSettings {
    pub fn load(file: &Path, base: &Path) -> Result<CliSettings, CliConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| CliConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| CliConfigError::Toml {
                file: file.to_path_buf(),
                message: e.message().trim().to_string(),
            })?;
        let get = |section: &str, key: &str| {
            doc.get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let admin_listen = match get("admin", "listen") {
            None => SocketAddr::from(([127, 0, 0, 1], 9090)),
            Some(l) => l.parse().map_err(|_| CliConfigError::AdminListen {
                file: file.to_path_buf(),
                listen: l.clone(),
            })?,
        };
        Ok(CliSettings {
            admin_listen,
            token_file: get("admin", "token_file").map(|t| resolve_path(base, &t)),
            routes_dir: resolve_path(
                base,
                &get("server", "routes_dir").unwrap_or_else(|| "routes".into()),
            ),
            state_dir: resolve_path(
                base,
                &get("server", "state_dir").unwrap_or_else(|| "state".into()),
            ),
        })
    }

    /// The admin API's base URL; a wildcard listen address is reached on loopback.
    pub fn admin_url(&self) -> String {
        let mut addr = self.admin_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }
}
