//! What the config names but does not hold: peer addresses (resolved once, at load:
//! the data path never does DNS) and the admin token.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::TOKEN_ENV;

/// The admin token, for the server and the command line alike: `BANYAN_ADMIN_TOKEN` if
/// set, else the token file's trimmed content, else none.
pub fn admin_token(token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    match token_file {
        Some(path) => admin_token_file(path),
        None => Ok(None),
    }
}

/// A token file's token (trimmed); an empty file is an error.
pub fn admin_token_file(path: &Path) -> anyhow::Result<Option<String>> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read admin token file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        anyhow::bail!("admin token file {} is empty", path.display());
    }
    Ok(Some(t))
}

/// Why a peer's address could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` needs a port, like \"{0}:80\"")]
    NoPort(String),
    #[error("`{0}` is not host:port")]
    NotHostPort(String),
    #[error("cannot resolve `{spec}`: {source}")]
    Lookup {
        spec: String,
        source: std::io::Error,
    },
    #[error("`{0}` resolved to no address")]
    NoAddress(String),
}

/// Resolves "host:port" once, at load: the data path never does DNS. A name with both
/// IPv4 and IPv6 addresses resolves to its first IPv4 address, the one a `localhost`
/// upstream nearly always listens on.
pub fn resolve_peer(spec: &str) -> Result<SocketAddr, ResolveError> {
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(ResolveError::NoPort(spec.to_string()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(ResolveError::NotHostPort(spec.to_string()));
    }
    let addrs: Vec<SocketAddr> = match spec.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(source) => {
            return Err(ResolveError::Lookup {
                spec: spec.to_string(),
                source,
            })
        }
    };
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ResolveError::NoAddress(spec.to_string()))
}
