//! The rustls client an HTTP/1.1 upstream over TLS is reached with, built once when the
//! config loads: the trusted roots (the upstream's `ca`, else the system's, read once per
//! process), the client certificate, TLS 1.2 and 1.3, ALPN `http/1.1`. The same trust
//! Pingora's connector would apply (verification of the chain and of the name is always
//! on: banyan has no setting that turns it off).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::TlsError;

/// The system's trusted roots, as Pingora reads them (its environment variables
/// included); an unreadable store is an empty one, as it is for Pingora.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let _ = pingora::tls::load_platform_certs_incl_env_into_store(&mut store);
            Arc::new(store)
        })
        .clone()
}

/// `roots`: the CA file and its certificates; `own`: the client certificate chain and key
/// with their files (for the error message).
pub fn http1_config(
    roots: Option<(&Path, Vec<CertificateDer<'static>>)>,
    own: Option<(
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        &Path,
        &Path,
    )>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match roots {
        None => system_roots(),
        Some((path, certs)) => {
            let mut store = RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| TlsError::Content {
                    path: path.to_path_buf(),
                    what: format!("a certificate cannot be trusted as a root: {e}"),
                })?;
            }
            Arc::new(store)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Content {
            path: Default::default(),
            what: format!("no TLS version to offer: {e}"),
        })?
        .with_root_certificates(roots);
    let mut config = match own {
        None => builder.with_no_client_auth(),
        Some((certs, key, cert_path, key_path)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| TlsError::Mismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
                why: e.to_string(),
            })?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
